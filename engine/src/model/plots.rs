//! The curves drawn as SVG: ROC, precision-recall and calibration, each
//! with the model's threshold marked, as self-contained SVG text (no
//! browser, no fonts embedded: viewers draw the text with their own).

use plotters::prelude::*;

use super::curves::Curves;

/// Which picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plot {
    Roc,
    PrecisionRecall,
    Calibration,
}

impl Plot {
    pub const ALL: [Plot; 3] = [Plot::Roc, Plot::PrecisionRecall, Plot::Calibration];

    /// The file name the picture is written under.
    pub fn file_name(self) -> &'static str {
        match self {
            Plot::Roc => "roc.svg",
            Plot::PrecisionRecall => "precision_recall.svg",
            Plot::Calibration => "calibration.svg",
        }
    }
}

const SIZE: (u32, u32) = (560, 440);
const CURVE: RGBColor = RGBColor(31, 119, 180);
const MARK: RGBColor = RGBColor(214, 39, 40);

/// The plotting library refused to draw a picture.
#[derive(Debug, thiserror::Error)]
#[error("drawing {file}: {reason}")]
pub struct PlotError {
    pub file: &'static str,
    pub reason: String,
}

/// One picture of `curves` as SVG text.
pub fn svg(curves: &Curves, plot: Plot) -> Result<String, PlotError> {
    let mut out = String::new();
    draw(&mut out, curves, plot).map_err(|e| PlotError {
        file: plot.file_name(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

fn draw<'a>(out: &'a mut String, curves: &Curves, plot: Plot) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let at = curves.at_threshold;
    let (title, x_desc, y_desc) = match plot {
        Plot::Roc => ("ROC curve", "false positive rate", "true positive rate (recall)"),
        Plot::PrecisionRecall => ("Precision-recall curve", "recall", "precision"),
        Plot::Calibration => ("Calibration", "mean predicted probability", "observed share of 1s"),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: {} rows", curves.rows), ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let reference = BLACK.mix(0.35);
    let mark = format!("threshold {:.3}", at.threshold);
    match plot {
        Plot::Roc => {
            chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], reference))?;
            chart
                .draw_series(LineSeries::new(
                    curves.roc.iter().map(|p| (p.false_positive_rate, p.true_positive_rate)),
                    CURVE.stroke_width(2),
                ))?
                .label(format!("model (AUC {:.3})", curves.roc_auc))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], CURVE.stroke_width(2)));
            chart
                .draw_series([Circle::new((at.false_positive_rate, at.recall), 5, MARK.filled())])?
                .label(mark)
                .legend(|(x, y)| Circle::new((x + 9, y), 4, MARK.filled()));
        }
        Plot::PrecisionRecall => {
            let base = curves.positives as f64 / curves.rows.max(1) as f64;
            chart.draw_series(LineSeries::new([(0.0, base), (1.0, base)], reference))?;
            chart
                .draw_series(LineSeries::new(
                    curves.precision_recall.iter().map(|p| (p.recall, p.precision)),
                    CURVE.stroke_width(2),
                ))?
                .label(format!("model (AP {:.3})", curves.average_precision))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], CURVE.stroke_width(2)));
            chart
                .draw_series([Circle::new((at.recall, at.precision), 5, MARK.filled())])?
                .label(format!("{mark} (F1 {:.3})", at.f1))
                .legend(|(x, y)| Circle::new((x + 9, y), 4, MARK.filled()));
        }
        Plot::Calibration => {
            chart
                .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], reference))?
                .label("perfectly calibrated")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], reference));
            let points: Vec<(f64, f64)> = curves
                .calibration
                .iter()
                .map(|b| (b.mean_predicted, b.observed))
                .collect();
            chart
                .draw_series(LineSeries::new(points.iter().copied(), CURVE.stroke_width(2)))?
                .label("model (10 bins)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], CURVE.stroke_width(2)));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, CURVE.filled())))?;
            chart
                .draw_series(LineSeries::new(
                    [(at.threshold, 0.0), (at.threshold, 1.0)],
                    MARK.stroke_width(2),
                ))?
                .label(mark)
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], MARK));
        }
    }
    let position = match plot {
        Plot::Roc => SeriesLabelPosition::LowerRight,
        Plot::PrecisionRecall => SeriesLabelPosition::UpperRight,
        Plot::Calibration => SeriesLabelPosition::UpperLeft,
    };
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::evaluation::EvaluationBuilder;

    #[test]
    fn every_plot_is_svg_with_its_curve_and_threshold() {
        let mut b = EvaluationBuilder::default();
        for i in 0..200 {
            let p = (i as f64 + 0.5) / 200.0;
            b.add(i % 3 != 0 && p > 0.3, p, p >= 0.5);
        }
        let curves = Curves::new(&b, 0.5, "t").unwrap();
        for plot in Plot::ALL {
            let text = svg(&curves, plot).unwrap();
            assert!(text.starts_with("<svg"), "{}", &text[..40]);
            assert!(text.contains("threshold 0.500"), "{plot:?}");
            assert!(text.contains("<polyline"), "{plot:?}");
        }
    }
}
