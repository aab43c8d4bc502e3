//! The training rows as the optimiser sees them: one parameter per
//! categorical level (a full one-hot set; the L2 term keeps the optimum
//! unique) and one per numeric column, standardised with the training mean
//! and deviation, which the artifact records so scoring standardises alike.
//! Kept apart from the objective in [`super`] so the optimiser only sees
//! indices and numbers; the way back, parameters to the artifact's
//! features, is here too, since it reads the same layout.

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;

use super::FitSpec;
use crate::model::artifact::Feature;
use crate::model::training_data::TrainingRow;

/// One usable row, encoded for the optimiser.
pub(super) struct Encoded {
    /// Parameter index of each categorical column's active level.
    pub(super) levels: Vec<u32>,
    pub(super) label: bool,
}

/// The parameter layout, `[intercept, every categorical level..., every
/// numeric]`, and the rows encoded in it.
pub(super) struct Encoding {
    /// Each categorical column's levels; the missing level (an empty
    /// value, with `missing_level`) last, when the data had one.
    vocabularies: Vec<Vec<String>>,
    /// Mean and standard deviation of each numeric column.
    stats: Vec<(f64, f64)>,
    /// Parameter index of each categorical column's first level.
    offsets: Vec<u32>,
    /// Parameter index of the first numeric column.
    pub(super) numeric_offset: usize,
    pub(super) n_params: usize,
    pub(super) rows: Vec<Encoded>,
    /// Per row, its standardised numeric values, missing -> 0 (the mean).
    pub(super) standardised: Vec<Vec<f64>>,
}

impl Encoding {
    pub(super) fn new(usable: &[TrainingRow], spec: &FitSpec) -> Encoding {
        let vocabularies: Vec<Vec<String>> = (0..spec.categorical.len())
            .map(|j| {
                let mut levels = sorted_levels(usable.iter().map(|r| r.levels[j].as_str()).filter(|l| !l.is_empty()));
                if usable.iter().any(|r| r.levels[j].is_empty()) {
                    levels.push(String::new());
                }
                levels
            })
            .collect();
        let stats: Vec<(f64, f64)> = (0..spec.numeric.len())
            .map(|j| mean_std(usable.iter().filter_map(|r| r.numbers[j])))
            .collect();

        // Parameter layout: [intercept, every categorical level..., every numeric].
        let mut offsets = Vec::with_capacity(vocabularies.len());
        let mut index_of: Vec<HashMap<&str, u32>> = Vec::new();
        let mut next = 1u32;
        for vocab in &vocabularies {
            offsets.push(next);
            index_of.push(
                vocab
                    .iter()
                    .enumerate()
                    .map(|(k, level)| (level.as_str(), next + k as u32))
                    .collect(),
            );
            next += vocab.len() as u32;
        }
        let numeric_offset = next as usize;
        let n_params = numeric_offset + spec.numeric.len();
        let rows: Vec<Encoded> = usable
            .iter()
            .map(|r| Encoded {
                levels: r
                    .levels
                    .iter()
                    .enumerate()
                    .map(|(j, level)| index_of[j][level.as_str()])
                    .collect(),
                label: r.label,
            })
            .collect();
        // Standardised numeric values, missing -> 0 (the mean).
        let standardised: Vec<Vec<f64>> = usable
            .iter()
            .map(|r| {
                r.numbers
                    .iter()
                    .zip(&stats)
                    .map(|(x, (mean, std))| x.map_or(0.0, |x| (x - mean) / std))
                    .collect()
            })
            .collect();
        Encoding {
            vocabularies,
            stats,
            offsets,
            numeric_offset,
            n_params,
            rows,
            standardised,
        }
    }

    /// The fitted parameters as the artifact's features, in the spec's order.
    pub(super) fn features(&self, spec: &FitSpec, theta: &[f64]) -> Vec<Feature> {
        let mut features = Vec::new();
        for (j, name) in spec.categorical.iter().enumerate() {
            let mut missing = None;
            let mut weights = IndexMap::new();
            for (k, level) in self.vocabularies[j].iter().enumerate() {
                let weight = theta[self.offsets[j] as usize + k];
                if level.is_empty() {
                    missing = Some(weight);
                } else {
                    weights.insert(level.clone(), weight);
                }
            }
            features.push(Feature::Categorical {
                name: name.clone(),
                weights,
                missing,
            });
        }
        for (j, name) in spec.numeric.iter().enumerate() {
            features.push(Feature::Numeric {
                name: name.clone(),
                mean: self.stats[j].0,
                std: self.stats[j].1,
                weight: theta[self.numeric_offset + j],
            });
        }
        features
    }
}

/// Levels in a stable, readable order: numerically when every level is an
/// integer (so months read 1..12), otherwise lexicographically.
fn sorted_levels<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = values.collect();
    let mut levels: Vec<String> = set.into_iter().map(str::to_owned).collect();
    if levels.iter().all(|l| l.parse::<i64>().is_ok()) {
        levels.sort_by_key(|l| l.parse::<i64>().unwrap_or_default());
    }
    levels
}

fn mean_std(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = values.collect();
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    (mean, if std > 0.0 { std } else { 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_sort_numerically() {
        let levels = sorted_levels(["10", "2", "1", "12"].into_iter());
        assert_eq!(levels, ["1", "2", "10", "12"]);
        let levels = sorted_levels(["b", "a", "10"].into_iter());
        assert_eq!(levels, ["10", "a", "b"]);
    }
}
