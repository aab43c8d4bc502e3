//! The curves of a model on labelled rows, stored beside a manifest:
//! ROC, precision-recall and calibration as SVG pictures, and their points
//! as `curves.json`, under the version that drew them
//! (`<input>/<generation>/curves/<version>/`). A fit draws them on its
//! held-out rows; a scoring run on the rows that carry the model's label.

use std::sync::Arc;

use super::{JobError, JobRunner};
use crate::layout::OutputNames;
use crate::manifest::OutputObject;
use crate::model::curves::Curves;
use crate::model::plots::{self, Plot};
use crate::model::{EvaluationBuilder, Model};
use crate::storage::{StorageError, WriteOptions, read_all, write_bytes};

impl JobRunner {
    /// Writes the curves of `curves` beside the manifest: three SVG files
    /// and their points. Create-only; one already there from an earlier
    /// attempt stands when it holds the same bytes (curves are
    /// deterministic for one input and one model version), and is left
    /// out of the manifest otherwise.
    pub(super) async fn put_curves(
        &self,
        names: &OutputNames,
        version: &str,
        curves: &Curves,
    ) -> Result<Vec<OutputObject>, JobError> {
        let mut files: Vec<(String, Vec<u8>, &'static str)> = Vec::new();
        for plot in Plot::ALL {
            let svg = plots::svg(curves, plot).map_err(|e| JobError::Internal(e.to_string()))?;
            files.push((
                names.curves(version, plot.file_name()),
                svg.into_bytes(),
                "image/svg+xml",
            ));
        }
        let mut points = serde_json::to_vec_pretty(curves).map_err(|e| JobError::Internal(e.to_string()))?;
        points.push(b'\n');
        files.push((names.curves(version, "curves.json"), points, "application/json"));
        let mut stored = Vec::new();
        for (name, bytes, content_type) in files {
            let meta = match write_bytes(
                self.output.as_ref(),
                &name,
                bytes.clone(),
                WriteOptions::create_only(content_type),
            )
            .await
            {
                Ok(meta) => meta,
                Err(StorageError::AlreadyExists(_)) => {
                    let (meta, existing) = read_all(self.output.as_ref(), &name, 64 << 20).await?;
                    if existing != bytes {
                        tracing::warn!(
                            object = self.output.uri(&name),
                            "curves from another attempt differ; not linked"
                        );
                        continue;
                    }
                    self.output.checksum(&name).await?.unwrap_or(meta)
                }
                Err(e) => return Err(e.into()),
            };
            stored.push(OutputObject::new(&meta, self.output.uri(&name)));
        }
        Ok(stored)
    }
}

/// The curves of a scoring run's labelled rows (`evaluation`: the whole
/// input's, or the ranges' merged), if they hold both classes.
pub(super) fn scoring_curves(model: &Arc<Model>, evaluation: &EvaluationBuilder, input_uri: &str) -> Option<Curves> {
    Curves::new(evaluation, model.threshold(), &format!("labelled rows of {input_uri}"))
}
