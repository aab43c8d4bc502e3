//! The model's logit over a parsed chunk, with polars.
//!
//! One maths for batch and online: a categorical term is a lookup of the
//! value in the term's weights (polars' `replace` kernel over the column;
//! with a missing level or ignored unknowns, [`Term::contribution`]), a
//! numeric term is [`Term::contribution`] itself, applied to each value;
//! the terms are added to the intercept in term order, exactly as
//! [`crate::model::Model::logit`] adds them for one row. A value the model
//! cannot take gives a null logit (the row is then rejected, its reasons
//! found by the same per-row checks as online).

use polars::prelude::*;

use crate::model::{Model, Term};

/// A term's weights as the lists polars' `replace` takes, built once per
/// file.
pub struct CompiledTerm {
    term: Term,
    /// Categorical: the levels and their weights.
    lookup: Option<(ListChunked, ListChunked)>,
}

/// The logit of a model, ready for chunk after chunk.
pub struct Logit {
    intercept: f64,
    terms: Vec<CompiledTerm>,
}

impl Logit {
    pub fn new(model: &Model) -> PolarsResult<Logit> {
        let terms = model
            .terms()
            .iter()
            .map(|term| {
                let lookup = match term {
                    // A missing level or ignored values: the per-row path
                    // below, which is the online maths itself.
                    Term::Categorical {
                        weights,
                        missing: None,
                        ignore_unknown: false,
                        ..
                    } => {
                        let mut levels: Vec<(&String, &f64)> = weights.iter().collect();
                        levels.sort_by(|a, b| a.0.cmp(b.0));
                        let old = Series::new("old".into(), levels.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>());
                        let new = Series::new("new".into(), levels.iter().map(|(_, w)| **w).collect::<Vec<_>>());
                        Some((old.implode()?, new.implode()?))
                    }
                    Term::Categorical { .. } | Term::Numeric { .. } => None,
                };
                Ok(CompiledTerm {
                    term: term.clone(),
                    lookup,
                })
            })
            .collect::<PolarsResult<_>>()?;
        Ok(Logit {
            intercept: model.intercept(),
            terms,
        })
    }

    /// The logit of every row; `features` are the string columns of the
    /// model's terms, in term order.
    pub fn evaluate(&self, features: &[&Series], height: usize) -> PolarsResult<Float64Chunked> {
        let mut logit = Float64Chunked::full("logit".into(), self.intercept, height);
        for (compiled, column) in self.terms.iter().zip(features) {
            let contribution = match (&compiled.term, &compiled.lookup) {
                (Term::Categorical { .. }, Some((old, new))) => {
                    let missing = Series::new_null("default".into(), 1).cast(&DataType::Float64)?;
                    replace_or_default(column, old, new, &missing, Some(DataType::Float64))?
                        .f64()?
                        .clone()
                }
                (term, _) => {
                    let values = column.str()?;
                    values
                        .iter()
                        .map(|raw| term.contribution(raw).ok())
                        .collect::<Float64Chunked>()
                }
            };
            logit = &logit + &contribution;
        }
        Ok(logit)
    }
}
