//! `scorer demo`: the whole local pipeline, end to end, on the shipped data.
//!
//! It starts the real service on a free loopback port with directories as
//! buckets, starts the local notifier, drops two files into the input
//! directory the way a careful uploader does (write elsewhere, rename in),
//! waits for each manifest to be committed, and prints where the outputs
//! are and what they say.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::event::{Generation, ObjectName};
use crate::layout::OutputNames;
use crate::manifest::{Manifest, Status};
use crate::notifier::{self, NotifierConfig};
use crate::startup::{Application, StartError};
use crate::storage::local::generation_of;
use crate::storage::{self, Missing, StorageError};

/// The real SCL 2017 flights (see data/README.md), built in so the demo runs
/// from any directory.
pub const SHIPPED_DATA: &[u8] = include_bytes!("../../data/scl_flights_2017.csv");
pub const SHIPPED_DATA_NAME: &str = "scl_flights_2017.csv";

/// A few rows in the raw 18-column layout of the original challenge file,
/// two of them with values the model cannot take.
pub const RAW_SAMPLE: &str = "\
Fecha-I,Vlo-I,Ori-I,Des-I,Emp-I,Fecha-O,Vlo-O,Ori-O,Des-O,Emp-O,DIA,MES,AÑO,DIANOM,TIPOVUELO,OPERA,SIGLAORI,SIGLADES
2017-01-01 23:30:00,226,SCEL,KMIA,AAL,2017-01-01 23:33:00,226,SCEL,KMIA,AAL,1,1,2017,Domingo,I,American Airlines,Santiago,Miami
2017-07-14 08:05:00,1011,SCEL,SCFA,LAN,2017-07-14 08:31:00,1011,SCEL,SCFA,LXP,14,7,2017,Viernes,N,Grupo LATAM,Santiago,Antofagasta
2017-03-02 10:00:00,99,SCEL,SAEZ,XXX,2017-03-02 10:00:00,99,SCEL,SAEZ,XXX,2,3,2017,Jueves,I,Nowhere Air,Santiago,Buenos Aires
2017-12-31 22:10:00,17,SCEL,SCIE,SKU,2017-12-31 22:40:00,17,SCEL,SCIE,SKU,31,13,2017,Domingo,N,Sky Airline,Santiago,Concepcion
";
pub const RAW_SAMPLE_NAME: &str = "raw_layout_sample.csv";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("demo directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("demo bucket: {0}")]
    Bucket(#[from] StorageError),
    #[error("demo file {0}: {1}")]
    Name(String, String),
    #[error("no manifest for {0} after {1:?}")]
    Timeout(String, Duration),
    #[error("unreadable manifest {0}: {1}")]
    Manifest(PathBuf, String),
}

/// What the demo produced, per input file.
pub struct DemoResult {
    pub dir: PathBuf,
    pub manifests: Vec<(String, PathBuf, Manifest)>,
}

/// Runs the demo in `dir` (a new temporary directory when `None`, kept so
/// the outputs can be read afterwards).
pub async fn run(dir: Option<PathBuf>, timeout: Duration) -> Result<DemoResult, DemoError> {
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => tempfile::Builder::new().prefix("scorer-demo-").tempdir()?.keep(),
    };
    let mut settings = Settings::local(dir.clone())?;
    settings.revision = "demo".to_owned();
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    let state = app.state();
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let input = storage::open_local(&dir, "input", Missing::Create)?;
    let output = storage::open_local(&dir, "output", Missing::Create)?;
    let notifier = tokio::spawn(notifier::run(
        NotifierConfig {
            input: input.clone(),
            dead_letter_dir: dir.join("dead-letter"),
            endpoint: format!("http://{addr}/"),
            settle: Duration::from_millis(200),
        },
        stop.clone(),
    ));

    let started = Instant::now();
    while state.model().is_none() {
        if started.elapsed() > timeout {
            return Err(DemoError::Timeout("the model".into(), timeout));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut expected = Vec::new();
    for (name, bytes) in [
        (SHIPPED_DATA_NAME, SHIPPED_DATA),
        (RAW_SAMPLE_NAME, RAW_SAMPLE.as_bytes()),
    ] {
        let generation = drop_file(input.root(), name, bytes)?;
        // Named by the layout, as the job names it (a long or odd name
        // goes under `_by-hash/`).
        let object = ObjectName::parse(name).map_err(|e| DemoError::Name(name.to_owned(), e))?;
        let generation = Generation::new(generation)
            .ok_or_else(|| DemoError::Name(name.to_owned(), format!("generation {generation} is not positive")))?;
        let manifest = OutputNames::new(&object, generation).manifest();
        let path = output
            .path_of(&manifest)
            .map_err(|e| DemoError::Name(name.to_owned(), e.to_string()))?;
        expected.push((name.to_owned(), path));
    }
    let mut manifests = Vec::new();
    for (name, path) in expected {
        // The manifest is written last and atomically: once it exists, the
        // outputs it names are complete.
        while !path.exists() {
            if started.elapsed() > timeout {
                stop.cancel();
                return Err(DemoError::Timeout(name, timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = std::fs::read(&path)?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| DemoError::Manifest(path.clone(), e.to_string()))?;
        manifests.push((name, path, manifest));
    }
    stop.cancel();
    let _ = notifier.await;
    if let Ok(result) = server.await {
        result?;
    }
    Ok(DemoResult { dir, manifests })
}

/// Writes a file beside the input directory and renames it in, so the
/// notifier sees it complete at once. Returns its generation.
fn drop_file(input_dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<i64> {
    let staging = input_dir.join(format!(".{name}.uploading"));
    std::fs::write(&staging, bytes)?;
    let generation = generation_of(std::fs::metadata(&staging)?.modified().ok());
    std::fs::rename(&staging, input_dir.join(name))?;
    Ok(generation)
}

/// The human summary the CLI prints.
pub fn render(result: &DemoResult) -> String {
    let mut out = format!(
        "scorer demo: the local pipeline, end to end, in {}\n",
        result.dir.display()
    );
    for (name, path, m) in &result.manifests {
        out.push('\n');
        match m.status {
            Status::Scored => out.push_str(&format!(
                "{name}: {} rows, {} scored, {} rejected ({} ms), model {} {}\n",
                m.rows.input, m.rows.scored, m.rows.rejected, m.timings.score_ms, m.model.name, m.model.version
            )),
            Status::Failed => out.push_str(&format!(
                "{name}: not scored: {}\n",
                m.failure.as_deref().unwrap_or("?")
            )),
            Status::Fitted => out.push_str(&format!("{name}: fitted {} {}\n", m.model.name, m.model.version)),
        }
        if let Some(metrics) = &m.metrics {
            out.push_str(&format!(
                "  against its {} labels ({} rows): accuracy {:.4}, class-1 recall {:.4}, ROC AUC {}\n",
                m.model.target,
                metrics.rows,
                metrics.accuracy,
                metrics.recall[1],
                metrics.roc_auc.map_or_else(|| "n/a".to_owned(), |a| format!("{a:.4}"))
            ));
        }
        if let Some(p) = &m.outputs.predictions {
            out.push_str(&format!("  predictions  {}\n", p.uri.trim_start_matches("file://")));
        }
        if let Some(e) = &m.outputs.errors {
            let errors_path = e.uri.trim_start_matches("file://");
            out.push_str(&format!("  errors       {errors_path}\n"));
            if let Ok(text) = std::fs::read_to_string(errors_path) {
                for line in text.lines().skip(1).take(5) {
                    out.push_str(&format!("      {line}\n"));
                }
            }
        }
        out.push_str(&format!("  manifest     {}\n", path.display()));
    }
    out
}
