//! Models as a product: the curves people look at, the registry, routing
//! and fit on upload.

use std::path::Path;
use std::process::Command;

use crate::harness::{data, scorer, stderr, stdout};

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
    let run = scorer(&[
        "train",
        "--data",
        data("scl_flights_2017.csv").to_str().unwrap(),
        "--target",
        "atraso_15",
        "--categorical",
        "OPERA,TIPOVUELO,MES",
        "--split-column",
        "split",
        "--balanced",
        "--threshold",
        "recall>=0.6",
        "--out",
        model.to_str().unwrap(),
    ]);
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
