//! Classification metrics, accumulated one labelled prediction at a time so
//! the batch engine can report them without holding the file in memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Probabilities are grouped at this resolution for ROC AUC; identical
/// probabilities (the common case for categorical models) stay exact ties.
pub(crate) const AUC_RESOLUTION: f64 = 1e6;
/// Clamp for log loss, as scikit-learn does, so a confident miss is finite.
const EPS: f64 = 1e-15;

/// Evaluation of a set of labelled predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    pub rows: u64,
    pub accuracy: f64,
    /// `[[true 0 predicted 0, true 0 predicted 1], [true 1 predicted 0, true 1 predicted 1]]`
    pub confusion_matrix: [[u64; 2]; 2],
    pub precision: [f64; 2],
    pub recall: [f64; 2],
    pub f1: [f64; 2],
    /// `None` when only one class is present.
    pub roc_auc: Option<f64>,
    pub log_loss: f64,
}

/// Accumulates labelled predictions. Memory is bounded by the number of
/// distinct probabilities at 1e-6 resolution.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationBuilder {
    confusion: [[u64; 2]; 2],
    log_loss_sum: f64,
    /// probability bucket -> (negatives, positives)
    buckets: BTreeMap<u32, (u64, u64)>,
}

impl EvaluationBuilder {
    pub fn add(&mut self, label: bool, probability: f64, predicted: bool) {
        self.confusion[usize::from(label)][usize::from(predicted)] += 1;
        let p = probability.clamp(EPS, 1.0 - EPS);
        self.log_loss_sum -= if label { p.ln() } else { (1.0 - p).ln() };
        let bucket = (probability.clamp(0.0, 1.0) * AUC_RESOLUTION).round() as u32;
        let entry = self.buckets.entry(bucket).or_default();
        if label {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }

    pub fn merge(&mut self, other: &EvaluationBuilder) {
        for (i, row) in other.confusion.iter().enumerate() {
            for (j, n) in row.iter().enumerate() {
                self.confusion[i][j] += n;
            }
        }
        self.log_loss_sum += other.log_loss_sum;
        for (bucket, (neg, pos)) in &other.buckets {
            let entry = self.buckets.entry(*bucket).or_default();
            entry.0 += neg;
            entry.1 += pos;
        }
    }

    /// Each probability bucket (probability × 1e6, rounded) with its
    /// negatives and positives, ascending.
    pub fn buckets(&self) -> impl Iterator<Item = (u32, (u64, u64))> + '_ {
        self.buckets.iter().map(|(b, counts)| (*b, *counts))
    }

    pub fn rows(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    /// `None` when nothing was added.
    pub fn finish(&self) -> Option<Evaluation> {
        let rows = self.rows();
        if rows == 0 {
            return None;
        }
        let c = self.confusion;
        let ratio = |num: u64, den: u64| if den == 0 { 0.0 } else { num as f64 / den as f64 };
        let precision = [ratio(c[0][0], c[0][0] + c[1][0]), ratio(c[1][1], c[1][1] + c[0][1])];
        let recall = [ratio(c[0][0], c[0][0] + c[0][1]), ratio(c[1][1], c[1][1] + c[1][0])];
        let f1 = [0, 1].map(|k| {
            let (p, r) = (precision[k], recall[k]);
            if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
        });
        Some(Evaluation {
            rows,
            accuracy: ratio(c[0][0] + c[1][1], rows),
            confusion_matrix: c,
            precision,
            recall,
            f1,
            roc_auc: self.roc_auc(),
            log_loss: self.log_loss_sum / rows as f64,
        })
    }

    /// Mann-Whitney form of the area under the ROC curve, ties counted half.
    fn roc_auc(&self) -> Option<f64> {
        let (negatives, positives) = self
            .buckets
            .values()
            .fold((0u64, 0u64), |(n, p), (bn, bp)| (n + bn, p + bp));
        if negatives == 0 || positives == 0 {
            return None;
        }
        let mut negatives_below = 0u64;
        let mut wins = 0.0f64;
        for (neg, pos) in self.buckets.values() {
            wins += *pos as f64 * (negatives_below as f64 + *neg as f64 / 2.0);
            negatives_below += neg;
        }
        Some(wins / (negatives as f64 * positives as f64))
    }
}

impl Evaluation {
    /// A few human lines, used by `scorer train`, `score` and `demo`.
    pub fn render(&self) -> String {
        let c = self.confusion_matrix;
        format!(
            "rows {}  accuracy {:.4}  ROC AUC {}  log loss {:.4}\n\
             class 0: precision {:.4} recall {:.4} f1 {:.4}\n\
             class 1: precision {:.4} recall {:.4} f1 {:.4}\n\
             confusion matrix (rows = true 0/1): [[{}, {}], [{}, {}]]",
            self.rows,
            self.accuracy,
            self.roc_auc.map_or_else(|| "n/a".to_owned(), |a| format!("{a:.4}")),
            self.log_loss,
            self.precision[0],
            self.recall[0],
            self.f1[0],
            self.precision[1],
            self.recall[1],
            self.f1[1],
            c[0][0],
            c[0][1],
            c[1][0],
            c[1][1],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation_has_auc_one_and_full_accuracy() {
        let mut acc = EvaluationBuilder::default();
        acc.add(false, 0.1, false);
        acc.add(false, 0.2, false);
        acc.add(true, 0.8, true);
        acc.add(true, 0.9, true);
        let m = acc.finish().unwrap();
        assert_eq!(m.accuracy, 1.0);
        assert_eq!(m.roc_auc, Some(1.0));
        assert_eq!(m.confusion_matrix, [[2, 0], [0, 2]]);
    }

    #[test]
    fn ties_count_half_and_confusion_is_row_true_column_predicted() {
        let mut acc = EvaluationBuilder::default();
        acc.add(false, 0.5, true);
        acc.add(true, 0.5, true);
        let m = acc.finish().unwrap();
        assert_eq!(m.roc_auc, Some(0.5));
        assert_eq!(m.confusion_matrix, [[0, 1], [0, 1]]);
        assert_eq!(m.precision[1], 0.5);
        assert_eq!(m.recall[1], 1.0);
        assert_eq!(m.recall[0], 0.0);
        assert!((m.log_loss - std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn merge_equals_adding_everything_to_one() {
        let mut a = EvaluationBuilder::default();
        let mut b = EvaluationBuilder::default();
        let mut all = EvaluationBuilder::default();
        for (i, p) in [0.1, 0.4, 0.35, 0.8, 0.7, 0.2].iter().enumerate() {
            let label = i % 2 == 1;
            let target = if i < 3 { &mut a } else { &mut b };
            target.add(label, *p, *p >= 0.5);
            all.add(label, *p, *p >= 0.5);
        }
        a.merge(&b);
        assert_eq!(a.finish(), all.finish());
    }

    #[test]
    fn nothing_added_gives_no_metrics() {
        assert!(EvaluationBuilder::default().finish().is_none());
    }
}
