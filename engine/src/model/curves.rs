//! ROC, precision-recall and calibration curves of a set of labelled
//! predictions, the threshold rules that read them, and the same curves
//! drawn as SVG (`model::plots`).
//!
//! Everything is computed from an [`EvaluationBuilder`]'s buckets (counts of
//! negatives and positives per probability at 1e-6 resolution), so a
//! scoring run of any size draws its curves in bounded memory (and the
//! ranges of a sharded file could merge theirs before drawing; the job does
//! not draw them yet). The JSON points are thinned to at most about
//! [`MAX_POINTS`] per curve; the areas and the threshold's point are
//! computed over every bucket.

use serde::{Deserialize, Serialize};

use super::evaluation::{AUC_RESOLUTION, EvaluationBuilder};
use super::fit::ThresholdRule;

/// About this many points per curve in the JSON and the pictures.
pub const MAX_POINTS: usize = 500;
/// Equal-width bins of the calibration curve.
pub const CALIBRATION_BINS: usize = 10;

/// One point of the ROC curve: predicting 1 from `threshold` up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    pub threshold: f64,
    pub false_positive_rate: f64,
    pub true_positive_rate: f64,
}

/// One point of the precision-recall curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    pub threshold: f64,
    pub recall: f64,
    pub precision: f64,
}

/// One bin of the calibration (reliability) curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub rows: u64,
    /// Mean predicted probability of the bin's rows.
    pub mean_predicted: f64,
    /// Share of the bin's rows that are positive.
    pub observed: f64,
}

/// Where the model's threshold falls on the curves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Operating {
    pub threshold: f64,
    pub false_positive_rate: f64,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
}

/// The three curves, as written to `curves.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// What the rows were ("held-out rows of flights.csv", "labelled rows of ...").
    pub of: String,
    pub rows: u64,
    pub positives: u64,
    pub roc_auc: f64,
    /// Area under the precision-recall curve as scikit-learn's
    /// `average_precision_score` computes it (steps, no interpolation).
    pub average_precision: f64,
    pub at_threshold: Operating,
    pub roc: Vec<RocPoint>,
    pub precision_recall: Vec<PrPoint>,
    pub calibration: Vec<CalibrationBin>,
}

/// Cumulative counts from the highest probability down: at bucket `k`,
/// predicting 1 for every bucket `>= k`.
struct Sweep {
    /// `(bucket, negatives, positives)` ascending, as the builder holds them.
    buckets: Vec<(u32, u64, u64)>,
    negatives: u64,
    positives: u64,
}

/// The threshold that predicts 1 for exactly the buckets from `bucket` up.
fn threshold_of(bucket: u32) -> f64 {
    ((f64::from(bucket) - 0.5) / AUC_RESOLUTION).clamp(1e-9, 1.0 - 1e-9)
}

impl Sweep {
    fn new(builder: &EvaluationBuilder) -> Sweep {
        let buckets: Vec<(u32, u64, u64)> = builder.buckets().map(|(b, (n, p))| (b, n, p)).collect();
        let negatives = buckets.iter().map(|b| b.1).sum();
        let positives = buckets.iter().map(|b| b.2).sum();
        Sweep {
            buckets,
            negatives,
            positives,
        }
    }

    /// `(threshold, false positives, true positives)` from the top bucket
    /// down, one entry per bucket.
    fn descending(&self) -> impl Iterator<Item = (f64, u64, u64)> + '_ {
        let (mut fp, mut tp) = (0u64, 0u64);
        self.buckets.iter().rev().map(move |&(bucket, n, p)| {
            fp += n;
            tp += p;
            (threshold_of(bucket), fp, tp)
        })
    }

    fn rates(&self, fp: u64, tp: u64) -> (f64, f64, f64) {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        // Precision with nothing predicted positive is 1, as scikit-learn's
        // curve starts.
        let precision = if fp + tp == 0 { 1.0 } else { ratio(tp, fp + tp) };
        (ratio(fp, self.negatives), ratio(tp, self.positives), precision)
    }

    fn operating(&self, threshold: f64) -> Operating {
        let (mut fp, mut tp) = (0u64, 0u64);
        for &(bucket, n, p) in &self.buckets {
            if f64::from(bucket) / AUC_RESOLUTION >= threshold {
                fp += n;
                tp += p;
            }
        }
        let (fpr, recall, precision) = self.rates(fp, tp);
        Operating {
            threshold,
            false_positive_rate: fpr,
            recall,
            precision,
            f1: f1(precision, recall),
        }
    }
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Why a threshold rule found no threshold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("the rows to choose a threshold on hold a single class")]
    SingleClass,
    #[error("no threshold reaches precision {wanted} (the best is {best:.4})")]
    PrecisionOutOfReach { wanted: f64, best: f64 },
}

/// The threshold a rule picks on these labelled predictions.
pub fn choose_threshold(builder: &EvaluationBuilder, rule: ThresholdRule) -> Result<f64, RuleError> {
    if let ThresholdRule::Fixed(t) = rule {
        return Ok(t);
    }
    let sweep = Sweep::new(builder);
    if sweep.negatives == 0 || sweep.positives == 0 {
        return Err(RuleError::SingleClass);
    }
    let mut chosen: Option<(f64, f64)> = None;
    let mut best_precision = 0.0f64;
    for (threshold, fp, tp) in sweep.descending() {
        let (_, recall, precision) = sweep.rates(fp, tp);
        best_precision = best_precision.max(precision);
        match rule {
            ThresholdRule::MaxF1 => {
                let score = f1(precision, recall);
                // Ties keep the higher threshold (met first).
                if chosen.is_none_or(|(_, best)| score > best) {
                    chosen = Some((threshold, score));
                }
            }
            ThresholdRule::MinRecall(wanted) => {
                if recall >= wanted {
                    return Ok(threshold);
                }
            }
            ThresholdRule::MinPrecision(wanted) => {
                // The lowest threshold that still holds the precision.
                if precision >= wanted {
                    chosen = Some((threshold, precision));
                }
            }
            ThresholdRule::Fixed(_) => {}
        }
    }
    match (rule, chosen) {
        (_, Some((threshold, _))) => Ok(threshold),
        (ThresholdRule::MinPrecision(wanted), None) => Err(RuleError::PrecisionOutOfReach {
            wanted,
            best: best_precision,
        }),
        // Recall reaches 1 at the lowest bucket; F1 always has a maximum.
        _ => Err(RuleError::SingleClass),
    }
}

impl Curves {
    /// The curves of these labelled predictions; `None` with a single class.
    pub fn new(builder: &EvaluationBuilder, threshold: f64, of: &str) -> Option<Curves> {
        let sweep = Sweep::new(builder);
        if sweep.negatives == 0 || sweep.positives == 0 {
            return None;
        }
        let step = 1.0 / MAX_POINTS as f64;
        let mut roc = vec![RocPoint {
            threshold: 1.0,
            false_positive_rate: 0.0,
            true_positive_rate: 0.0,
        }];
        let mut pr = Vec::new();
        let mut average_precision = 0.0;
        let mut previous_recall = 0.0;
        let total = sweep.buckets.len();
        for (i, (t, fp, tp)) in sweep.descending().enumerate() {
            let (fpr, tpr, precision) = sweep.rates(fp, tp);
            average_precision += (tpr - previous_recall) * precision;
            previous_recall = tpr;
            let last = i + 1 == total;
            let moved = |x: f64, y: f64, px: f64, py: f64| (x - px).abs() + (y - py).abs() >= step;
            if let Some(p) = roc.last()
                && (last || moved(fpr, tpr, p.false_positive_rate, p.true_positive_rate))
            {
                roc.push(RocPoint {
                    threshold: t,
                    false_positive_rate: fpr,
                    true_positive_rate: tpr,
                });
            }
            if last
                || pr
                    .last()
                    .is_none_or(|p: &PrPoint| moved(tpr, precision, p.recall, p.precision))
            {
                pr.push(PrPoint {
                    threshold: t,
                    recall: tpr,
                    precision,
                });
            }
        }
        let mut bins = vec![(0u64, 0.0f64, 0u64); CALIBRATION_BINS];
        for &(bucket, n, p) in &sweep.buckets {
            let probability = f64::from(bucket) / AUC_RESOLUTION;
            let k = ((probability * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
            bins[k].0 += n + p;
            bins[k].1 += probability * (n + p) as f64;
            bins[k].2 += p;
        }
        let calibration = bins
            .iter()
            .enumerate()
            .filter(|(_, (rows, _, _))| *rows > 0)
            .map(|(k, (rows, sum, positives))| CalibrationBin {
                lower: k as f64 / CALIBRATION_BINS as f64,
                upper: (k + 1) as f64 / CALIBRATION_BINS as f64,
                rows: *rows,
                mean_predicted: sum / *rows as f64,
                observed: *positives as f64 / *rows as f64,
            })
            .collect();
        Some(Curves {
            of: of.to_owned(),
            rows: sweep.negatives + sweep.positives,
            positives: sweep.positives,
            roc_auc: builder.finish().and_then(|e| e.roc_auc).unwrap_or(0.5),
            average_precision,
            at_threshold: sweep.operating(threshold),
            roc,
            precision_recall: pr,
            calibration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(rows: &[(bool, f64)]) -> EvaluationBuilder {
        let mut b = EvaluationBuilder::default();
        for &(label, p) in rows {
            b.add(label, p, p >= 0.5);
        }
        b
    }

    #[test]
    fn a_perfect_ranking_has_unit_areas_and_a_corner() {
        let b = builder(&[(false, 0.1), (false, 0.2), (true, 0.7), (true, 0.9)]);
        let c = Curves::new(&b, 0.5, "t").unwrap();
        assert_eq!(c.roc_auc, 1.0);
        assert!((c.average_precision - 1.0).abs() < 1e-12);
        assert!(
            c.roc
                .iter()
                .any(|p| p.false_positive_rate == 0.0 && p.true_positive_rate == 1.0)
        );
        assert_eq!(c.at_threshold.recall, 1.0);
        assert_eq!(c.at_threshold.precision, 1.0);
        assert_eq!(c.calibration.iter().map(|b| b.rows).sum::<u64>(), 4);
    }

    #[test]
    fn average_precision_matches_scikit_learn_on_a_small_case() {
        // sklearn.metrics.average_precision_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.8333...
        let b = builder(&[(false, 0.1), (false, 0.4), (true, 0.35), (true, 0.8)]);
        let c = Curves::new(&b, 0.5, "t").unwrap();
        assert!(
            (c.average_precision - 0.833_333_333_333_333_4).abs() < 1e-12,
            "{}",
            c.average_precision
        );
        assert!((c.roc_auc - 0.75).abs() < 1e-12);
    }

    #[test]
    fn rules_pick_the_thresholds_they_promise() {
        let b = builder(&[
            (false, 0.1),
            (false, 0.4),
            (true, 0.35),
            (true, 0.8),
            (false, 0.6),
            (true, 0.9),
        ]);
        // max F1: predicting 1 from 0.35 up gives p=3/5? no: {0.35,0.4,0.6,0.8,0.9} -> tp 3 fp 2: f1 .75;
        // from 0.8 up: tp 2 fp 0 -> p 1 r .667 f1 .8 (the best).
        let t = choose_threshold(&b, ThresholdRule::MaxF1).unwrap();
        assert!(t > 0.6 && t <= 0.8, "{t}");
        let t = choose_threshold(&b, ThresholdRule::MinRecall(0.9)).unwrap();
        assert!(t > 0.1 && t <= 0.35, "{t}");
        let t = choose_threshold(&b, ThresholdRule::MinPrecision(0.99)).unwrap();
        assert!(t > 0.6 && t <= 0.8, "{t}");
        assert!(matches!(
            choose_threshold(&builder(&[(true, 0.2), (false, 0.9)]), ThresholdRule::MinPrecision(0.9)),
            Err(RuleError::PrecisionOutOfReach { .. })
        ));
        assert_eq!(choose_threshold(&b, ThresholdRule::Fixed(0.3)).unwrap(), 0.3);
    }

    #[test]
    fn many_distinct_probabilities_are_thinned_but_keep_both_ends() {
        let rows: Vec<(bool, f64)> = (0..100_000)
            .map(|i| (i % 3 == 0, (i as f64 + 0.5) / 100_000.0))
            .collect();
        let c = Curves::new(&builder(&rows), 0.5, "t").unwrap();
        assert!(c.roc.len() <= 2 * MAX_POINTS + 2, "{}", c.roc.len());
        let last = c.roc.last().unwrap();
        assert_eq!((last.false_positive_rate, last.true_positive_rate), (1.0, 1.0));
        assert!((c.roc_auc - 0.5).abs() < 0.01);
    }
}
