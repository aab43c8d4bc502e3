//! Models as a product: the curves people look at, the registry, routing
//! and fit on upload.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cloud::{Chain, chain, manifest_of};
use crate::harness::{Server, data, eventually, find_files, scorer, stderr, stdout, train_args};
use crate::support::gsutil::gsutil;

/// Renders an SVG with librsvg (installed by .ci/tools.sh) and counts
/// its pixels: (not white, the curve's blue, the threshold's red).
fn render(svg: &Path) -> (usize, usize, usize) {
    let png = svg.with_extension("png");
    let run = Command::new("rsvg-convert")
        .args([svg.to_str().unwrap(), "-o", png.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("rsvg-convert: {e}: run the tests through ./test.sh, or apt-get install librsvg2-bin")
        });
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(
        info.width >= 400 && info.height >= 300,
        "{}x{}",
        info.width,
        info.height
    );
    let channels = info.color_type.samples();
    let (mut ink, mut blue, mut red) = (0, 0, 0);
    for px in buf[..info.buffer_size()].chunks(channels) {
        let (r, g, b) = (px[0] as i32, px[1] as i32, px[2] as i32);
        let alpha = if channels == 4 { px[3] } else { 255 };
        if alpha == 0 || (r > 245 && g > 245 && b > 245) {
            continue;
        }
        ink += 1;
        if b > 150 && r < 80 {
            blue += 1;
        }
        if r > 180 && g < 80 && b < 80 {
            red += 1;
        }
    }
    (ink, blue, red)
}

#[test]
fn train_and_a_labelled_score_draw_curves_that_render() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    let shipped = data("scl_flights_2017.csv");
    let run = scorer(&train_args(
        shipped.to_str().unwrap(),
        &["--threshold", "recall>=0.6", "--out", model.to_str().unwrap()],
    ));
    assert!(run.status.success(), "{}", stderr(&run));
    let curves = dir.path().join("model.curves");
    assert!(
        stdout(&run).contains(&format!(
            "curves of the held-out rows of scl_flights_2017.csv in {}",
            curves.display()
        )),
        "{}",
        stdout(&run)
    );
    let points: serde_json::Value =
        serde_json::from_slice(&std::fs::read(curves.join("curves.json")).unwrap()).unwrap();
    assert_eq!(points["rows"], 22_508);
    let recall = points["at_threshold"]["recall"].as_f64().unwrap();
    assert!(recall >= 0.6, "recall>=0.6 chose a threshold of recall {recall}");
    let auc = points["roc_auc"].as_f64().unwrap();
    assert!((auc - 0.6619).abs() < 1e-3, "{auc}");
    for name in ["roc.svg", "precision_recall.svg", "calibration.svg"] {
        let (ink, blue, red) = render(&curves.join(name));
        assert!(ink > 2_000, "{name}: only {ink} drawn pixels");
        assert!(blue > 200, "{name}: no curve ({blue} blue pixels)");
        assert!(red > 20, "{name}: no threshold mark ({red} red pixels)");
    }

    // A labelled scoring run draws the curves of its own rows.
    let scored = dir.path().join("scored");
    let out = dir.path().join("predictions.csv");
    let run = scorer(&[
        "score",
        data("scl_flights_2017.csv").to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--curves",
        scored.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let points: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scored.join("curves.json")).unwrap()).unwrap();
    assert_eq!(points["rows"], 68_206);
    let (ink, _, red) = render(&scored.join("roc.svg"));
    assert!(ink > 2_000 && red > 20);
}

// ---------------------------------------------------------------------------
// The registry in the chain: fit on upload, promotion by the rule, routing,
// rollback, on local directories and on the Cloud Storage emulator alike.

const SPEC: &str = r#"{"target": "adelie", "categorical": ["island", "sex"],
  "numeric": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"],
  "split_column": "split", "missing_level": true, "handle_unknown": "ignore"}"#;

/// The penguins table, its training rows' labels replaced by noise (1 on
/// every `noise`-th row) when asked (the held-out rows keep theirs): a
/// worse model on the same held-out rows.
fn penguins_csv(noise: Option<usize>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.csv");
    let run = Command::new(crate::parity::parity_python())
        .args([
            crate::harness::repo_root()
                .join("tests/parity/penguins.py")
                .to_str()
                .unwrap(),
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&path).unwrap();
    let Some(every) = noise else { return text };
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
        // island,sex,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,year,adelie,split,weight
        if i > 0 && fields[8] == "train" {
            fields[7] = u8::from(i % every == 0).to_string();
        }
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// What the chain test does to one backend.
trait Bucketed {
    /// Uploads `bytes` as input `name`, with custom metadata `model` if given.
    async fn upload(&self, name: &str, bytes: &[u8], model: Option<&str>);
    /// The committed manifest of input `name`.
    async fn manifest(&self, name: &str) -> Value;
    /// The committed manifest of training file `name`, once its aliases
    /// moved: they move after the commit, so a manifest alone does not
    /// say the next fit will find this one as its champion.
    async fn fitted(&self, name: &str) -> Value;
    /// `scorer model ARGS` against this backend's output bucket.
    fn model_cli(&self, args: &[&str]) -> std::process::Output;
    fn server(&self) -> &Server;
}

struct Local {
    dir: tempfile::TempDir,
    server: Server,
}

impl Bucketed for Local {
    async fn upload(&self, name: &str, bytes: &[u8], model: Option<&str>) {
        // Written beside, labelled, then renamed in: the notifier takes a
        // renamed file at once, metadata and all.
        let staging = self.dir.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        let tmp = staging.join(name.replace('/', "_"));
        std::fs::write(&tmp, bytes).unwrap();
        if let Some(model) = model {
            xattr::set(&tmp, "user.model", model.as_bytes()).unwrap();
        }
        let dest = self.dir.path().join("input").join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }

    async fn manifest(&self, name: &str) -> Value {
        let dir = self.dir.path().join("output").join(name);
        let path = eventually(Duration::from_secs(60), || find_files(&dir, "manifest.json").pop()).await;
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    async fn fitted(&self, name: &str) -> Value {
        let manifest = self.manifest(name).await;
        let dir = self.dir.path().join("output").join(name);
        eventually(Duration::from_secs(60), || find_files(&dir, "promoted.json").pop()).await;
        manifest
    }

    fn model_cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["model"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--local", self.dir.path().to_str().unwrap()]);
        scorer(&all)
    }

    fn server(&self) -> &Server {
        &self.server
    }
}

impl Bucketed for Chain {
    async fn upload(&self, name: &str, bytes: &[u8], model: Option<&str>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("upload");
        std::fs::write(&file, bytes).unwrap();
        let header = model.map(|m| format!("x-goog-meta-model:{m}"));
        let target = format!("gs://in-bucket/{name}");
        let mut args: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(h) = &header {
            args.extend([std::ffi::OsStr::new("-h"), std::ffi::OsStr::new(h.as_str())]);
        }
        args.extend([
            std::ffi::OsStr::new("cp"),
            file.as_os_str(),
            std::ffi::OsStr::new(target.as_str()),
        ]);
        gsutil(&self.fake, &args).await;
    }

    async fn manifest(&self, name: &str) -> Value {
        manifest_of(&self.fake, name, Duration::from_secs(120)).await
    }

    async fn fitted(&self, name: &str) -> Value {
        let manifest = self.manifest(name).await;
        let promoted = format!(
            "{name}/{}/promoted.json",
            manifest["input"]["generation"].as_str().unwrap()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.fake.get_object("out-bucket", &promoted).await.is_none() {
            assert!(std::time::Instant::now() < deadline, "no {promoted} within a minute");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        manifest
    }

    fn model_cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["model"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--output-bucket", "out-bucket"]);
        Command::new(crate::harness::SCORER)
            .args(&all)
            .env("STORAGE_EMULATOR_HOST", self.fake.endpoint.as_str())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    fn server(&self) -> &Server {
        &self.server
    }
}

const REGISTRY_ENV: [(&str, &str); 4] = [
    ("TRAINING_PREFIX", "training/"),
    ("PROMOTE", "auto"),
    ("MODEL_REFRESH_SECONDS", "1"),
    ("MODEL_ROUTES", "flights/=scl-flight-delay@production"),
];

/// The version `/predict?model=REF` answers with.
async fn serving(server: &Server, reference: &str) -> String {
    let row = json!({"instances": [{"island": "Dream", "sex": "male", "bill_length_mm": 40, "bill_depth_mm": 18,
        "flipper_length_mm": 190, "body_mass_g": 3800}]});
    let response = reqwest::Client::new()
        .post(server.url(&format!("/predict?model={reference}")))
        .json(&row)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["model_version"].as_str().unwrap_or_default().to_owned()
}

async fn fit_promote_route_and_roll_back(b: &impl Bucketed) {
    b.upload("training/penguins/spec.json", SPEC.as_bytes(), None).await;
    // v1: noisy labels, the first version of penguins: it serves.
    b.upload("training/penguins/v1.csv", penguins_csv(Some(2)).as_bytes(), None)
        .await;
    let m1 = b.fitted("training/penguins/v1.csv").await;
    assert_eq!(m1["status"], "fitted", "{m1}");
    let v1 = m1["model"]["version"].as_str().unwrap().to_owned();
    assert_eq!(m1["fit"]["promote_to"], json!(["staging", "production"]), "{m1}");
    assert_eq!(m1["outputs"]["curves"].as_array().map(Vec::len), Some(4), "{m1}");
    // v2: clean labels, better on its held-out rows than v1: promoted.
    b.upload("training/penguins/v2.csv", penguins_csv(None).as_bytes(), None)
        .await;
    let m2 = b.fitted("training/penguins/v2.csv").await;
    let v2 = m2["model"]["version"].as_str().unwrap().to_owned();
    let champion = &m2["fit"]["champion"];
    assert_eq!(champion["version"], v1.as_str(), "{m2}");
    let (new, old) = (
        champion["challenger_roc_auc"].as_f64().unwrap(),
        champion["champion_roc_auc"].as_f64().unwrap(),
    );
    assert!(new > old, "clean labels should beat noise: {new} vs {old}");
    assert_eq!(m2["fit"]["promote_to"], json!(["staging", "production"]), "{m2}");
    // v3: noisy again (other noise): worse than v2 on the same rows, @staging only.
    b.upload("training/penguins/v3.csv", penguins_csv(Some(3)).as_bytes(), None)
        .await;
    let m3 = b.fitted("training/penguins/v3.csv").await;
    let v3 = m3["model"]["version"].as_str().unwrap().to_owned();
    assert_eq!(m3["fit"]["champion"]["version"], v2.as_str(), "{m3}");
    assert_eq!(m3["fit"]["promote_to"], json!(["staging"]), "{m3}");
    assert!(m3["fit"]["decision"].as_str().unwrap().contains(" < "), "{m3}");
    let list = b.model_cli(&["list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let models: Value = serde_json::from_slice(&list.stdout).unwrap();
    let penguins = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "penguins")
        .unwrap();
    assert_eq!(
        penguins["aliases"],
        json!({"production": v2, "staging": v3}),
        "{models}"
    );
    assert_eq!(penguins["versions"].as_array().unwrap().len(), 3);

    // The next scoring upload that asks for penguins uses @production = v2.
    let rows = penguins_csv(None);
    b.upload("scoring/a.csv", rows.as_bytes(), Some("penguins")).await;
    let a = b.manifest("scoring/a.csv").await;
    assert_eq!(a["status"], "scored", "{a}");
    assert_eq!(a["model"]["version"], v2.as_str());
    assert_eq!(
        a["model"]["chosen_by"],
        json!({"reference": "penguins@production", "route": "metadata"})
    );
    assert_eq!(
        a["outputs"]["curves"].as_array().map(Vec::len),
        Some(4),
        "labelled rows draw curves: {a}"
    );
    // A prefix route picks the flights model; so does the default elsewhere.
    b.upload("flights/f.csv", b"OPERA,TIPOVUELO,MES\nGrupo LATAM,I,3\n", None)
        .await;
    let f = b.manifest("flights/f.csv").await;
    assert_eq!(f["model"]["name"], "scl-flight-delay");
    assert_eq!(f["model"]["chosen_by"]["route"], "prefix flights/");
    // A model that does not exist: a committed failure naming what there is.
    b.upload("scoring/bad.csv", rows.as_bytes(), Some("nosuch@production"))
        .await;
    let bad = b.manifest("scoring/bad.csv").await;
    assert_eq!(bad["status"], "failed");
    let why = bad["failure"].as_str().unwrap();
    assert!(why.contains("penguins") && why.contains("scl-flight-delay"), "{why}");

    // Roll back @production: v1 again, and the next file uses it.
    let rollback = b.model_cli(&["rollback", "penguins", "--alias", "production"]);
    assert!(rollback.status.success(), "{}", stderr(&rollback));
    assert!(
        stdout(&rollback).contains(&format!("{v2} -> {v1}")),
        "{}",
        stdout(&rollback)
    );
    // Its undo is a promotion of the version it left (a second rollback
    // would find nothing before v1).
    assert!(
        stdout(&rollback).contains(&format!("undo: scorer model promote penguins {v2} --alias production")),
        "{}",
        stdout(&rollback)
    );
    // Within MODEL_REFRESH_SECONDS the service follows (awaited, not slept).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while serving(b.server(), "penguins").await != v1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the service never followed the rollback"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.upload("scoring/b.csv", rows.as_bytes(), Some("penguins")).await;
    let after = b.manifest("scoring/b.csv").await;
    assert_eq!(after["model"]["version"], v1.as_str());
    // Promote puts v2 back; show names the alias's history.
    let promote = b.model_cli(&["promote", "penguins", &v2, "--alias", "production"]);
    assert!(promote.status.success(), "{}", stderr(&promote));
    let show = b.model_cli(&["show", "penguins@production"]);
    let text = stdout(&show);
    assert!(
        text.contains(&v2) && text.contains("before") && text.contains(&v1),
        "{text}"
    );
    assert!(text.contains("curves") && text.contains("roc.svg"), "{text}");
    // A typo in an alias makes a new one, and says so.
    let typo = b.model_cli(&["promote", "penguins", &v3, "--alias", "Production"]);
    assert!(typo.status.success(), "{}", stderr(&typo));
    assert!(
        stderr(&typo).contains("note: @Production is a new alias of penguins, beside @production, @staging"),
        "{}",
        stderr(&typo)
    );
    assert!(!stdout(&typo).contains("undo:"), "{}", stdout(&typo));
}

impl Local {
    /// A service on fresh local directories, its notifier on, with the
    /// registry's settings.
    async fn start() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let mut env = vec![("SETTLE_SECONDS", "0.2")];
        env.extend_from_slice(&REGISTRY_ENV);
        let server = Server::start(&["--local", dir.path().to_str().unwrap()], &env);
        server.ready().await;
        Local { dir, server }
    }
}

#[tokio::test]
async fn the_registry_on_local_directories() {
    fit_promote_route_and_roll_back(&Local::start().await).await;
}

/// A training file that cannot be fitted is a committed failure that says
/// why, whatever the reason: no model folder, a name the registry cannot
/// hold, no spec, a spec that is not one, a setting that means nothing, a
/// target the file does not have.
#[tokio::test]
async fn training_files_that_cannot_be_fitted_are_failures_that_say_why() {
    let b = Local::start().await;
    let rows = b"colour,size,y\nred,1,0\nblue,2,1\nred,3,1\nblue,4,0\n";
    b.upload(
        "training/weights/spec.json",
        br#"{"target": "y", "categorical": ["colour"], "class_weight": "2=1"}"#,
        None,
    )
    .await;
    b.upload(
        "training/typo/spec.json",
        br#"{"target": "y", "categorial": ["colour"]}"#,
        None,
    )
    .await;
    b.upload(
        "training/target/spec.json",
        br#"{"target": "label", "categorical": ["colour"]}"#,
        None,
    )
    .await;
    let cases = [
        (
            "training/orphan.csv",
            "a training file goes in a folder named after its model: training/<model-name>/orphan.csv",
        ),
        ("training/bad%name/a.csv", "model name \"bad%name\""),
        ("training/nospec/a.csv", "no spec for model nospec: write"),
        ("training/typo/a.csv", "spec.json#"),
        ("training/weights/a.csv", "class \"2\" is not 0 or 1"),
        ("training/target/a.csv", "no column label"),
    ];
    for (name, _) in &cases {
        b.upload(name, rows, None).await;
    }
    for (name, says) in cases {
        let m = b.manifest(name).await;
        assert_eq!(m["status"], "failed", "{name}: {m}");
        let why = m["failure"].as_str().unwrap();
        assert!(
            why.starts_with("the training file was not fitted: ") && why.contains(says),
            "{name}: {why}"
        );
    }
    let typo = b.manifest("training/typo/a.csv").await;
    assert!(
        typo["failure"]
            .as_str()
            .unwrap()
            .contains("is not a training spec: unknown field `categorial`"),
        "{typo}"
    );
    let list = b.model_cli(&["list", "--json"]);
    let models: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        models
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["scl-flight-delay"],
        "no version of anything was stored: {models}"
    );
}

#[tokio::test]
async fn the_registry_on_cloud_storage() {
    let c = chain(&REGISTRY_ENV).await;
    fit_promote_route_and_roll_back(&c).await;
}

/// Two instances that disagree about `@production` (one has cached the
/// old version for an hour, the other reads the new one) both get every
/// file (each runs a notifier on the same directories): each file is
/// scored once, by one version from its first row to its last.
#[tokio::test]
async fn two_instances_never_score_one_file_with_two_versions() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().to_str().unwrap();
    let common = [
        ("SETTLE_SECONDS", "0.2"),
        ("OUTPUT_FORMAT", "jsonl"),
        ("PROVENANCE", "on"),
    ];
    let mut slow_env = vec![("MODEL_REFRESH_SECONDS", "3600")];
    slow_env.extend_from_slice(&common);
    let slow = Server::start(&["--local", local], &slow_env);
    slow.ready().await;
    let flights = json!({"instances": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}]});
    let answer = |server: &Server| {
        let url = server.url("/predict?model=scl-flight-delay");
        let body = flights.clone();
        async move {
            let r: Value = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["model_version"].as_str().unwrap().to_owned()
        }
    };
    let old = answer(&slow).await;

    // A second version, promoted: the slow instance keeps the old one.
    let artifact = dir.path().join("c05.json");
    let shipped = data("scl_flights_2017.csv");
    let run = scorer(&train_args(
        shipped.to_str().unwrap(),
        &[
            "--c",
            "0.05",
            "--name",
            "scl-flight-delay",
            "--out",
            artifact.to_str().unwrap(),
        ],
    ));
    assert!(run.status.success(), "{}", stderr(&run));
    let publish = scorer(&[
        "model",
        "publish",
        artifact.to_str().unwrap(),
        "--alias",
        "production",
        "--local",
        local,
    ]);
    assert!(publish.status.success(), "{}", stderr(&publish));
    let mut fast_env = vec![("MODEL_REFRESH_SECONDS", "1")];
    fast_env.extend_from_slice(&common);
    let fast = Server::start(&["--local", local], &fast_env);
    fast.ready().await;
    let new = answer(&fast).await;
    assert_ne!(old, new);
    assert_eq!(
        answer(&slow).await,
        old,
        "the slow instance still has the old version cached"
    );

    let rows: String = std::iter::once("OPERA,TIPOVUELO,MES\n".to_owned())
        .chain((0..2000).map(|i| format!("Grupo LATAM,{},{}\n", if i % 2 == 0 { "I" } else { "N" }, 1 + i % 12)))
        .collect();
    let files = 8;
    for i in 0..files {
        let tmp = dir.path().join(format!("f{i}.csv"));
        std::fs::write(&tmp, &rows).unwrap();
        std::fs::create_dir_all(dir.path().join("input")).unwrap();
        std::fs::rename(&tmp, dir.path().join("input").join(format!("f{i}.csv"))).unwrap();
    }
    let mut versions = std::collections::BTreeSet::new();
    for i in 0..files {
        let out = dir.path().join("output").join(format!("f{i}.csv"));
        let manifest = eventually(Duration::from_secs(60), || find_files(&out, "manifest.json").pop()).await;
        let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        let version = m["model"]["version"].as_str().unwrap().to_owned();
        assert!(version == old || version == new, "{version}");
        versions.insert(version.clone());
        // One predictions object, every row by the manifest's version.
        assert_eq!(
            find_files(&out, "predictions.jsonl").len(),
            1,
            "f{i}: more than one predictions object"
        );
        let predictions = std::fs::read_to_string(manifest.with_file_name("predictions.jsonl")).unwrap();
        let mut n = 0;
        for line in predictions.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                row["model_version"],
                version.as_str(),
                "f{i}: a row scored by another version"
            );
            n += 1;
        }
        assert_eq!(n, 2000);
    }
    println!("two instances: {files} files, versions used: {versions:?}");
}

/// `scorer model ARGS` against a registry: local directories or the
/// Cloud Storage emulator.
fn model_command(args: &[&str], local: Option<&Path>, emulator: Option<&str>) -> Command {
    let mut cmd = Command::new(crate::harness::SCORER);
    cmd.arg("model").args(args).env("RUST_LOG", "warn");
    match (local, emulator) {
        (Some(dir), _) => {
            cmd.args(["--local", dir.to_str().unwrap()]);
        }
        (None, Some(host)) => {
            cmd.args(["--output-bucket", "out-bucket"])
                .env("STORAGE_EMULATOR_HOST", host);
        }
        (None, None) => unreachable!(),
    }
    cmd
}

/// Twelve `scorer model promote` processes at once, cycling three
/// versions: every change they report chains onto the one before (none
/// was overwritten unseen), and the alias's history is exactly that chain.
async fn concurrent_promotions_form_one_chain(local: Option<&Path>, emulator: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let base: Value = serde_json::from_slice(&std::fs::read(data("model.json")).unwrap()).unwrap();
    let mut versions = Vec::new();
    for i in 0..3 {
        let mut artifact = base.clone();
        artifact["name"] = json!("race");
        artifact["intercept"] = json!(-0.5 - f64::from(i) / 10.0);
        let path = dir.path().join(format!("v{i}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&artifact).unwrap()).unwrap();
        let out = model_command(&["publish", path.to_str().unwrap()], local, emulator)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        versions.push(text.split_whitespace().nth(1).unwrap().to_owned());
    }
    let children: Vec<_> = (0..12)
        .map(|i| {
            model_command(
                &["promote", "race", &versions[i % 3], "--alias", "production", "--json"],
                local,
                emulator,
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut changes = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let change: Value = serde_json::from_slice(&out.stdout).unwrap();
        if change["changed"] == true {
            changes.push(change);
        }
    }
    // In the order of the generations they wrote, each change starts where
    // the one before ended, from the alias's creation on.
    changes.sort_by_key(|c| c["generation"].as_i64().unwrap());
    let mut at = Value::Null;
    let mut chain = Vec::new();
    for c in &changes {
        assert_eq!(
            c["from"], at,
            "a change that does not start where the one before ended (a lost update): {changes:?}"
        );
        at = c["to"].clone();
        chain.push(at.as_str().unwrap().to_owned());
    }
    let show = model_command(&["show", "race@production", "--json"], local, emulator)
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["version"], json!(chain.last().unwrap()));
    let mut before: Vec<String> = chain[..chain.len() - 1].to_vec();
    before.reverse();
    assert_eq!(
        shown["alias"]["history"],
        json!(before),
        "the history is the chain of changes"
    );
}

#[tokio::test]
async fn concurrent_promotions_on_local_directories_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("output")).unwrap();
    concurrent_promotions_form_one_chain(Some(dir.path()), None).await;
}

#[tokio::test]
async fn concurrent_promotions_on_cloud_storage_lose_nothing() {
    let fake = crate::support::FakeGcs::start(crate::support::FakeGcsOptions {
        https: false,
        notifications: None,
    })
    .await;
    fake.create_bucket("out-bucket").await;
    concurrent_promotions_form_one_chain(None, Some(fake.endpoint.as_str())).await;
}
