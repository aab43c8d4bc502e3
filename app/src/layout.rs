//! The bucket layout: every object name the service writes or reads in the
//! output bucket. A change of output naming is a change here, nowhere else.
//!
//! For input `a/b.csv` at generation `G` the output bucket holds:
//!
//! ```text
//! a/b.csv/G/predictions.csv        every scored row: input columns, probability, prediction
//! a/b.csv/G/errors.csv             rejected rows (line, row, column, value, reason), if any
//! a/b.csv/G/manifest.json          written last, create-only: the commit point
//! a/b.csv/G/bigquery.json          the BigQuery load job of the predictions, if BIGQUERY_TABLE is set
//! a/b.csv/G/results.json           the message that announced the commit, if RESULTS_TOPIC is set
//! _leases/a/b.csv/G/NNNNNN.json    who is scoring it, until when
//! ```
//!
//! With `OUTPUT_FORMAT=parquet` (or `jsonl`) the predictions are
//! `predictions.parquet` (`predictions.jsonl`), and so on for every name
//! below; errors are always CSV.
//!
//! An input too large to score inside a push request is scored by a Cloud
//! Run job in N tasks (see `docs/SHARDING.md`):
//!
//! ```text
//! a/b.csv/G/predictions-00003-of-00008.csv   task 3's predictions, with the header
//! a/b.csv/G/errors.csv                       every rejected row, lines global to the input
//! a/b.csv/G/manifest.json                    lists the shards in order
//! _shards/a/b.csv/G/dispatch-NNNNNN.json     an execution was asked for (and .started.json: it was)
//! _shards/a/b.csv/G/of-00008/00003.json      task 3's record: its real byte range, rows, objects
//! _shards/a/b.csv/G/of-00008/00003.from-N.json  range 3 scored again from byte N (a repair)
//! _shards/a/b.csv/G/of-00008/rejects-00003.jsonl  task 3's rejected rows, lines local to its range
//! ```
//!
//! A labelled input (one holding the model's target column) also gets its
//! curves beside the manifest:
//!
//! ```text
//! a/b.csv/G/curves/<hex>/roc.svg, precision_recall.svg, calibration.svg, curves.json
//!                                  (<hex>: the model version that scored it)
//! ```
//!
//! The model registry (`crate::registry`), never cleaned by a lifecycle
//! rule:
//!
//! ```text
//! _models/<name>/<hex>.json      the artifact of version sha256:<hex>, create-only
//! _models/<name>/<hex>.fit.json  the fit on upload that made it: input, manifest, curves
//! _models/<name>/@<alias>        which version an alias points to (the only mutable
//!                                objects: each change a new generation, compare-and-swap)
//! ```
//!
//! A training file (under `TRAINING_PREFIX`) gets a fit instead of scores,
//! in the same places: `t/x.csv/G/manifest.json` (the fit's manifest) and
//! `t/x.csv/G/curves/...` (the held-out rows' curves), with its lease.
//!
//! The input name is kept whole and followed by `/G/`, so outputs of two
//! different inputs or generations can never collide, and a re-upload gets
//! fresh outputs. An input name too long (or too odd, or in the service's
//! own `_`-prefixed namespace) to lead its outputs' names is replaced by
//! `_by-hash/<SHA-256 of the name>`. Should a crashed
//! attempt have left a predictions or errors object without a manifest, the
//! next attempt writes `predictions.2.csv` (and so on): the manifest always
//! names the objects it commits.

use crate::event::{Generation, ObjectName};
use crate::score::OutputFormat;

/// Prefix of lease objects in the output bucket (cleaned by a lifecycle rule).
pub const LEASE_PREFIX: &str = "_leases/";
/// Prefix of the model registry: artifacts and aliases.
pub const MODEL_PREFIX: &str = "_models/";
/// Prefix of a sharded input's working objects (dispatch and shard
/// records, shard rejects), cleaned by a lifecycle rule.
pub const SHARD_PREFIX: &str = "_shards/";

/// The output object names for one input generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputNames {
    prefix: String,
    lease_prefix: String,
    shard_prefix: String,
    /// The predictions' extension: `csv`, `jsonl` or `parquet`.
    predictions_ext: &'static str,
}

/// Prefix of the outputs of inputs whose own name cannot lead their outputs'
/// names (see [`OutputNames::new`]).
pub const HASHED_PREFIX: &str = "_by-hash/";

/// Room kept for what follows an input name in any derived name: the lease
/// prefix, `/GENERATION/`, and the longest file name written there.
const DERIVED_ROOM: usize = 128;

impl OutputNames {
    /// The names for one input generation. They lead with the input name
    /// (`a/b.csv/G/...`) when it can: an input name so long that a derived
    /// name would pass Cloud Storage's 1,024 bytes, or one with segments a
    /// directory cannot hold (empty, `.`, `..`, a leading `/`, control
    /// characters), is replaced by `_by-hash/<SHA-256 of the name>/G/`: the
    /// same every time, and the manifest records the full input name.
    pub fn new(input: &ObjectName, generation: Generation) -> OutputNames {
        let name = input.as_str();
        let lead = if name.len() + DERIVED_ROOM <= 1024 && portable(name) {
            name.to_owned()
        } else {
            use sha2::{Digest, Sha256};
            format!("{HASHED_PREFIX}{}", hex::encode(Sha256::digest(name.as_bytes())))
        };
        OutputNames {
            prefix: format!("{lead}/{generation}/"),
            lease_prefix: format!("{LEASE_PREFIX}{lead}/{generation}/"),
            shard_prefix: format!("{SHARD_PREFIX}{lead}/{generation}/"),
            predictions_ext: OutputFormat::Csv.extension(),
        }
    }

    /// The same names with predictions in `format` (`predictions.parquet`).
    pub fn with_format(mut self, format: OutputFormat) -> OutputNames {
        self.predictions_ext = format.extension();
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn manifest(&self) -> String {
        format!("{}manifest.json", self.prefix)
    }

    /// The curves of the labelled rows (or a fit's held-out rows) by model
    /// `version`: curves depend on the model, and an attempt that crashed
    /// with another version must not leave its curves where this one's
    /// go. `file` is `roc.svg`, `precision_recall.svg`, `calibration.svg`
    /// or `curves.json`.
    pub fn curves(&self, version: &str, file: &str) -> String {
        format!(
            "{}curves/{}/{file}",
            self.prefix,
            version.strip_prefix("sha256:").unwrap_or(version)
        )
    }

    /// The record of the BigQuery load job of the committed predictions,
    /// written create-only after the manifest.
    pub fn bigquery_load(&self) -> String {
        format!("{}bigquery.json", self.prefix)
    }

    /// The aliases a fit on upload moved for its new version, recorded
    /// once they moved.
    pub fn promoted(&self) -> String {
        format!("{}promoted.json", self.prefix)
    }

    /// The record of the results message that announced the commit,
    /// written create-only after it was published.
    pub fn results_published(&self) -> String {
        format!("{}results.json", self.prefix)
    }

    /// `predictions.csv`, then `predictions.2.csv`, ... for attempt `n`
    /// (`.jsonl` or `.parquet` in those formats).
    pub fn predictions(&self, n: u32) -> String {
        self.numbered("predictions", self.predictions_ext, n)
    }

    pub fn errors(&self, n: u32) -> String {
        self.numbered("errors", "csv", n)
    }

    fn numbered(&self, stem: &str, ext: &str, n: u32) -> String {
        if n <= 1 {
            format!("{}{stem}.{ext}", self.prefix)
        } else {
            format!("{}{stem}.{n}.{ext}", self.prefix)
        }
    }

    /// The names of the generation an output object belongs to, and which
    /// output it is: the inverse of [`OutputNames::manifest`],
    /// [`OutputNames::predictions`] and [`OutputNames::errors`]. `None` for
    /// any other name (leases, fitted models, strays), so a listing of the
    /// output bucket can be read without knowing how names are made.
    pub fn parse_output(name: &str) -> Option<(OutputNames, OutputFile)> {
        if name.starts_with(LEASE_PREFIX) || name.starts_with(MODEL_PREFIX) || name.starts_with(SHARD_PREFIX) {
            return None;
        }
        let (dir, file) = name.rsplit_once('/')?;
        let kind = output_file(file)?;
        let ext = OutputFormat::ALL
            .into_iter()
            .find(|f| file.ends_with(&format!(".{}", f.extension())))
            .unwrap_or_default()
            .extension();
        let (lead, generation) = dir.rsplit_once('/')?;
        // Spelt as `OutputNames::new` spells it, or it is not ours.
        let generation = Generation::parse(generation)
            .ok()
            .filter(|g| g.to_string() == generation)?;
        if lead.is_empty() {
            return None;
        }
        Some((
            OutputNames {
                prefix: format!("{lead}/{generation}/"),
                lease_prefix: format!("{LEASE_PREFIX}{lead}/{generation}/"),
                shard_prefix: format!("{SHARD_PREFIX}{lead}/{generation}/"),
                predictions_ext: ext,
            },
            kind,
        ))
    }

    pub fn lease(&self, seq: u32) -> String {
        format!("{}{seq:06}.json", self.lease_prefix)
    }

    /// Where this input generation's lease records are.
    pub fn lease_prefix(&self) -> &str {
        &self.lease_prefix
    }

    /// Task `index` of `count`'s predictions, `n`-th attempt at the name:
    /// `predictions-00003-of-00008.csv`, then `...-of-00008.2.csv`.
    pub fn predictions_shard(&self, index: u32, count: u32, n: u32) -> String {
        self.numbered(
            &format!("predictions-{index:05}-of-{count:05}"),
            self.predictions_ext,
            n,
        )
    }

    /// The `seq`-th request for an execution (a later one only when an
    /// earlier execution ended without a manifest).
    pub fn dispatch(&self, seq: u32) -> String {
        format!("{}dispatch-{seq:06}.json", self.shard_prefix)
    }

    /// Written once the `seq`-th execution was started: its name.
    pub fn dispatch_started(&self, seq: u32) -> String {
        format!("{}dispatch-{seq:06}.started.json", self.shard_prefix)
    }

    /// Where the dispatch records are (listing finds the latest).
    pub fn dispatch_prefix(&self) -> String {
        format!("{}dispatch-", self.shard_prefix)
    }

    /// Where the records of an execution in `count` tasks are.
    pub fn shard_records_prefix(&self, count: u32) -> String {
        format!("{}of-{count:05}/", self.shard_prefix)
    }

    /// Task `index` of `count`'s record, written create-only when its range
    /// is scored and its objects verified.
    pub fn shard_record(&self, index: u32, count: u32) -> String {
        format!("{}{index:05}.json", self.shard_records_prefix(count))
    }

    /// The record of range `index` of `count` scored again from byte
    /// `start` (where the range before it really ended), create-only.
    pub fn shard_repair(&self, index: u32, count: u32, start: u64) -> String {
        format!("{}{index:05}.from-{start}.json", self.shard_records_prefix(count))
    }

    /// Task `index` of `count`'s rejected rows (JSON lines, lines local to
    /// its range), `n`-th attempt at the name.
    pub fn shard_rejects(&self, index: u32, count: u32, n: u32) -> String {
        let stem = format!("{}rejects-{index:05}", self.shard_records_prefix(count));
        if n <= 1 {
            format!("{stem}.jsonl")
        } else {
            format!("{stem}.{n}.jsonl")
        }
    }
}

/// Which output of a generation an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFile {
    Manifest,
    /// Predictions of attempt `n` (1 for `predictions.csv`).
    Predictions(u32),
    /// Rejected rows of attempt `n` (1 for `errors.csv`).
    Errors(u32),
    /// Task `index` of `count`'s predictions, attempt `n`.
    PredictionsShard {
        index: u32,
        count: u32,
        n: u32,
    },
}

/// Whether `file` (the last segment of a name) is one an output set holds:
/// `manifest.json`, `predictions.csv`, `predictions.N.csv`, `errors.csv`,
/// `errors.N.csv`, `predictions-00003-of-00008.csv` (and `.N.csv`); the
/// predictions also as `.jsonl` and `.parquet`.
pub fn is_output_name(file: &str) -> bool {
    output_file(file).is_some()
}

fn output_file(file: &str) -> Option<OutputFile> {
    if file == "manifest.json" {
        return Some(OutputFile::Manifest);
    }
    let (stem, csv) = match file.strip_suffix(".csv") {
        Some(stem) => (stem, true),
        None => (
            OutputFormat::ALL
                .iter()
                .find_map(|f| file.strip_suffix(f.extension())?.strip_suffix('.'))?,
            false,
        ),
    };
    let (kind, n) = match stem.split_once('.') {
        None => (stem, 1),
        // Only the numbers `numbered` writes: 2, 3, ... spelt canonically.
        Some((kind, text)) => (
            kind,
            text.parse::<u32>().ok().filter(|n| *n >= 2 && n.to_string() == text)?,
        ),
    };
    match kind {
        "predictions" => Some(OutputFile::Predictions(n)),
        "errors" if csv => Some(OutputFile::Errors(n)),
        "errors" => None,
        _ => {
            // `predictions-00003-of-00008`, spelt as `predictions_shard` spells it.
            let (index, count) = kind.strip_prefix("predictions-")?.split_once("-of-")?;
            let (i, c) = (index.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
            (format!("{i:05}") == index && format!("{c:05}") == count && i < c)
                .then_some(OutputFile::PredictionsShard { index: i, count: c, n })
        }
    }
}

/// Whether every `/`-separated segment of `name` could be a directory or
/// file name, the name would stay inside its bucket, and it does not start
/// in the service's own namespace (a first segment beginning with `_`:
/// `_leases/`, `_models/`, ..., which lifecycle rules clean up).
fn portable(name: &str) -> bool {
    !name.starts_with('/')
        && !name.starts_with('_')
        && !name.chars().any(char::is_control)
        // `.scorer-tmp` is the local backend's directory of writes in progress.
        && name.split('/').all(|s| !matches!(s, "" | "." | ".." | ".scorer-tmp") && s.len() <= 200)
}

/// The registry's artifact of `version` (`sha256:<hex>`) of model `name`.
pub fn model_version(name: &str, version: &str) -> String {
    format!(
        "{MODEL_PREFIX}{name}/{}.json",
        version.strip_prefix("sha256:").unwrap_or(version)
    )
}

/// Where the fit that made a version (on upload) is recorded: its input,
/// manifest and curves.
pub fn model_fit_record(name: &str, version: &str) -> String {
    format!(
        "{MODEL_PREFIX}{name}/{}.fit.json",
        version.strip_prefix("sha256:").unwrap_or(version)
    )
}

/// The registry's alias object `@alias` of model `name`.
pub fn model_alias(name: &str, alias: &str) -> String {
    format!("{MODEL_PREFIX}{name}/@{alias}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_take_the_format_s_extension_and_parse_back() {
        let n = OutputNames::new(&ObjectName::parse("a/b.csv").unwrap(), Generation::new(17).unwrap())
            .with_format(OutputFormat::Parquet);
        assert_eq!(n.predictions(1), "a/b.csv/17/predictions.parquet");
        assert_eq!(n.predictions(2), "a/b.csv/17/predictions.2.parquet");
        assert_eq!(n.errors(2), "a/b.csv/17/errors.2.csv");
        assert_eq!(
            n.predictions_shard(3, 8, 1),
            "a/b.csv/17/predictions-00003-of-00008.parquet"
        );
        for (name, file) in [
            ("a/b.csv/17/predictions.2.parquet", Some(OutputFile::Predictions(2))),
            ("a/b.csv/17/predictions.jsonl", Some(OutputFile::Predictions(1))),
            ("a/b.csv/17/errors.parquet", None),
            ("a/b.csv/17/predictions.xlsx", None),
            ("a/b.csv/17/bigquery.json", None),
        ] {
            assert_eq!(OutputNames::parse_output(name).map(|(_, f)| f), file, "{name}");
        }
    }

    #[test]
    fn names_keep_the_input_whole_and_are_keyed_by_generation() {
        let n = OutputNames::new(&ObjectName::parse("a/b.csv").unwrap(), Generation::new(17).unwrap());
        assert_eq!(n.manifest(), "a/b.csv/17/manifest.json");
        assert_eq!(n.predictions(1), "a/b.csv/17/predictions.csv");
        assert_eq!(n.predictions(2), "a/b.csv/17/predictions.2.csv");
        assert_eq!(n.errors(1), "a/b.csv/17/errors.csv");
        assert_eq!(n.lease(3), "_leases/a/b.csv/17/000003.json");
        assert_eq!(
            n.predictions_shard(3, 8, 1),
            "a/b.csv/17/predictions-00003-of-00008.csv"
        );
        assert_eq!(
            n.predictions_shard(3, 8, 2),
            "a/b.csv/17/predictions-00003-of-00008.2.csv"
        );
        assert_eq!(n.dispatch(1), "_shards/a/b.csv/17/dispatch-000001.json");
        assert_eq!(n.dispatch_started(1), "_shards/a/b.csv/17/dispatch-000001.started.json");
        assert_eq!(n.shard_record(3, 8), "_shards/a/b.csv/17/of-00008/00003.json");
        assert_eq!(
            n.shard_rejects(3, 8, 1),
            "_shards/a/b.csv/17/of-00008/rejects-00003.jsonl"
        );
    }

    #[test]
    fn long_and_odd_names_get_a_short_deterministic_prefix() {
        let long = "d/".repeat(460) + "x.csv";
        for name in [
            long.as_str(),
            "a//b.csv",
            "../up.csv",
            "a/./b.csv",
            "_leases/q.csv",
            "_models/m.csv",
        ] {
            let n = OutputNames::new(&ObjectName::parse(name).unwrap(), Generation::new(9).unwrap());
            assert!(n.prefix().starts_with(HASHED_PREFIX), "{name}: {}", n.prefix());
            assert!(n.lease(999_999).len() <= 1024);
            assert!(n.shard_rejects(9_999, 10_000, 999).len() <= 1024);
            assert_eq!(
                n,
                OutputNames::new(&ObjectName::parse(name).unwrap(), Generation::new(9).unwrap())
            );
        }
        // The longest name that still leads its outputs.
        let fits = "e/".repeat(445) + "y.csv";
        let n = OutputNames::new(&ObjectName::parse(&fits).unwrap(), Generation::new(i64::MAX).unwrap());
        assert!(n.prefix().starts_with(&fits));
        assert!(n.lease(999_999).len() <= 1024, "{}", n.lease(999_999).len());
        assert!(n.shard_rejects(9_999, 10_000, 999).len() <= 1024);
        assert!(n.dispatch_started(999_999).len() <= 1024);
    }

    #[test]
    fn an_input_named_like_an_output_does_not_collide() {
        let a = OutputNames::new(&ObjectName::parse("x.csv").unwrap(), Generation::new(5).unwrap());
        let b = OutputNames::new(
            &ObjectName::parse("x.csv/5/predictions.csv").unwrap(),
            Generation::new(5).unwrap(),
        );
        assert_ne!(a.predictions(1), b.predictions(1));
        assert!(!b.manifest().starts_with(&a.manifest()));
    }

    #[test]
    fn output_names_parse_back_into_their_generation() {
        for input in ["a/b.csv", "x.csv", "_leases/q.csv", "../up.csv"] {
            let n = OutputNames::new(&ObjectName::parse(input).unwrap(), Generation::new(17).unwrap());
            for (name, kind) in [
                (n.manifest(), OutputFile::Manifest),
                (n.predictions(1), OutputFile::Predictions(1)),
                (n.predictions(3), OutputFile::Predictions(3)),
                (n.errors(1), OutputFile::Errors(1)),
                (n.errors(12), OutputFile::Errors(12)),
                (
                    n.predictions_shard(3, 8, 1),
                    OutputFile::PredictionsShard {
                        index: 3,
                        count: 8,
                        n: 1,
                    },
                ),
                (
                    n.predictions_shard(0, 10_000, 2),
                    OutputFile::PredictionsShard {
                        index: 0,
                        count: 10_000,
                        n: 2,
                    },
                ),
            ] {
                assert_eq!(OutputNames::parse_output(&name), Some((n.clone(), kind)), "{name}");
            }
            assert_eq!(OutputNames::parse_output(&n.lease(1)), None);
            assert_eq!(OutputNames::parse_output(&n.shard_record(1, 2)), None);
            assert_eq!(OutputNames::parse_output(&n.dispatch(1)), None);
        }
        for stray in [
            "a.csv",
            "a.csv/manifest.json",
            "a.csv/x/manifest.json",
            "a.csv/17/predictions.1.csv",
            "a.csv/17/predictions.02.csv",
            "a.csv/17/predictions.+2.csv",
            "a.csv/+17/manifest.json",
            "a.csv/17/predictionsX.csv",
            "a.csv/17/notes.csv",
            "_models/sha256-00.json",
            "a.csv/17/predictions-3-of-8.csv",
            "a.csv/17/predictions-00008-of-00008.csv",
        ] {
            assert_eq!(OutputNames::parse_output(stray), None, "{stray}");
        }
        assert!(is_output_name("errors.2.csv") && !is_output_name("errors.csv.bak"));
    }

    #[test]
    fn registry_objects_are_named_by_model_version_and_alias() {
        assert_eq!(
            model_version("penguins", "sha256:0123456789abcdef"),
            "_models/penguins/0123456789abcdef.json"
        );
        assert_eq!(model_alias("penguins", "production"), "_models/penguins/@production");
    }
}
