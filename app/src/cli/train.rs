//! `scorer train`: fit a logistic regression and write its artifact.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;

use super::ending::{self, Stream};
use super::failed::{Exit, Failed};
use std::str::FromStr;

use super::files::{
    check_outputs, check_std_streams, is_dash, open_input, refuse_dash, refuse_directory_output, write_atomically,
};
use scorer::model::curves::Curves;
use scorer::model::fit::{
    self, ClassWeight, DEFAULT_MAX_ITERATIONS, FitError, FitSpec, HandleUnknown, Split, ThresholdRule,
};
use scorer::model::plots::{self, Plot};

#[derive(Args)]
pub struct TrainArgs {
    /// Training data: a CSV with a header line, read as `scorer score` reads
    /// its input (gzip, `,` `;` tab or `|`, a byte-order mark, Latin-1 or
    /// UTF-16); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// The 0/1 label column.
    #[arg(long, value_name = "COL")]
    target: String,
    /// Categorical feature columns (one-hot encoded), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    categorical: Vec<String>,
    /// Numeric feature columns (standardised), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "C,D")]
    numeric: Vec<String>,
    /// Column that says which rows train; all other rows are held out.
    #[arg(long, value_name = "COL", conflicts_with = "test_fraction")]
    split_column: Option<String>,
    /// Value of --split-column that marks training rows.
    #[arg(long, default_value = "train", requires = "split_column")]
    train_value: String,
    /// Without --split-column: hold out this fraction of rows (0 = none).
    #[arg(long, default_value_t = 0.33)]
    test_fraction: f64,
    /// Seed of the deterministic hold-out choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Weight classes inversely to their frequency: the same as
    /// `--class-weight balanced`.
    #[arg(long, conflicts_with = "class_weight")]
    balanced: bool,
    /// Per-class weights of the loss, as scikit-learn's class_weight:
    /// `none`, `balanced` (n / (2 n_class)) or fixed, `0=1.0,1=3.5`.
    #[arg(long, value_name = "WEIGHTS", default_value = "none", value_parser = ClassWeight::from_str)]
    class_weight: ClassWeight,
    /// A numeric column whose values weight each training row
    /// (scikit-learn's sample_weight); rows where it is empty, negative or
    /// not a number are skipped.
    #[arg(long, value_name = "COL")]
    sample_weight: Option<String>,
    /// Inverse L2 regularisation strength (scikit-learn's C).
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// L-BFGS iteration limit (scikit-learn's max_iter).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ITERATIONS)]
    max_iter: usize,
    /// Probability from which the prediction is 1: a number, or a rule
    /// applied to the held-out rows (the training rows when none are held
    /// out): `max-f1`, `recall>=0.6` (the highest threshold reaching that
    /// recall), `precision>=0.8` (the lowest reaching that precision).
    #[arg(long, value_name = "RULE", default_value = "0.5", value_parser = ThresholdRule::from_str)]
    threshold: ThresholdRule,
    /// Scoring a categorical value the fit never saw: `error` rejects the
    /// row, `ignore` adds nothing to its logit and counts it per column.
    #[arg(long, value_name = "WHAT", default_value = "error", value_parser = HandleUnknown::from_str)]
    handle_unknown: HandleUnknown,
    /// An empty categorical value is a level of its own (learned like the
    /// others) instead of a reason to skip the row.
    #[arg(long)]
    missing_level: bool,
    /// Where to write the ROC, precision-recall and calibration curves
    /// (three SVG files and curves.json). Default: beside --out, in
    /// `<out without .json>.curves/`; none when --out is `-`.
    #[arg(long, value_name = "DIR")]
    curves: Option<PathBuf>,
    /// Name recorded in the artifact (and printed beside its version by
    /// `score`). Default: the data file's name without `.csv`/`.gz`, or the
    /// target column when the data comes from standard input.
    #[arg(long)]
    name: Option<String>,
    /// Where to write the artifact (written atomically); `-` writes it to
    /// standard output (the summary then goes to standard error).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn train(args: TrainArgs) -> Result<Exit, Failed> {
    let stdin = is_dash(&args.data);
    let stdout = is_dash(&args.out);
    let outputs: &[(&str, &Path)] = if stdout { &[] } else { &[("--out", &args.out)] };
    for (flag, path) in outputs {
        refuse_directory_output(flag, path)?;
    }
    check_outputs((!stdin).then_some(("--data", args.data.as_path())), outputs)?;
    let inputs: &[(&str, &Path)] = if stdin { &[] } else { &[("--data", &args.data)] };
    check_std_streams(stdin, stdout, inputs, outputs)?;
    let data: Box<dyn Read + Send> = if stdin {
        Box::new(std::io::stdin())
    } else {
        Box::new(open_input(&args.data, "training data")?)
    };
    let split = match args.split_column {
        Some(column) => Split::Column {
            column,
            train_value: args.train_value,
        },
        None if args.test_fraction > 0.0 => Split::Fraction {
            test_fraction: args.test_fraction,
            seed: args.seed,
        },
        None => Split::None,
    };
    let name = args.name.unwrap_or_else(|| default_name(&args.data, &args.target));
    let spec = FitSpec {
        name,
        target: args.target,
        categorical: args.categorical,
        numeric: args.numeric,
        split,
        class_weight: if args.balanced {
            ClassWeight::Balanced
        } else {
            args.class_weight
        },
        sample_weight: args.sample_weight,
        missing_level: args.missing_level,
        handle_unknown: args.handle_unknown,
        c: args.c,
        threshold: args.threshold,
        max_iterations: args.max_iter,
    };
    let curves_dir = args
        .curves
        .clone()
        .or_else(|| (!stdout).then(|| curves_beside(&args.out)));
    if let Some(dir) = &curves_dir {
        refuse_dash("--curves", dir, "the curves are several files")?;
    }
    let data_name = if stdin {
        "stdin".to_owned()
    } else {
        args.data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let fitted = fit::fit(data, &data_name, &spec).map_err(|e| {
        let exit = match &e {
            FitError::Settings(_) => Exit::Usage,
            FitError::Read(_) | FitError::Model(_) => Exit::Failure,
            _ => Exit::Unscorable,
        };
        Failed::new(exit, anyhow::anyhow!("{}: {e}", args.data.display()))
    })?;
    let report = if stdout {
        ending::say(Stream::Stdout, &String::from_utf8_lossy(&fitted.json))?;
        Stream::Stderr
    } else {
        write_atomically(&args.out, &fitted.json, "model artifact")?;
        Stream::Stdout
    };
    let a = fitted.model.artifact();
    let mut text = format!(
        "fitted {} on {} rows ({} positive) in {} iterations ({})\n",
        a.name, a.training.rows, a.training.positives, a.training.iterations, a.training.solver
    );
    if !fitted.skipped.is_empty() {
        text.push_str(&format!("skipped {}\n", fitted.skipped_text));
    }
    let target = if stdout {
        "standard output".to_owned()
    } else {
        args.out.display().to_string()
    };
    text.push_str(&format!("wrote {target} (version {})\n", fitted.model.version()));
    if let Some(rule) = &a.training.threshold_rule {
        text.push_str(&format!("threshold {:.6} chosen by {rule}\n", a.threshold));
    }
    match &a.training.holdout {
        Some(m) => text.push_str(&format!("held-out metrics:\n{}\n", m.render())),
        None => text.push_str("no held-out rows: no metrics\n"),
    }
    if let (Some(dir), Some(curves)) = (&curves_dir, &fitted.curves) {
        write_curves(dir, curves)?;
        text.push_str(&format!("curves of the {} in {}\n", curves.of, dir.display()));
    }
    ending::say(report, &text)?;
    Ok(Exit::Ok)
}

/// A trained model's name when none is given: the data file's name without
/// its extensions (`flights.csv.gz` -> `flights`), so `score` prints
/// `model flights sha256:...`; the target column for standard input.
fn default_name(data: &Path, target: &str) -> String {
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let mut stem = name.as_str();
    for ext in [".gz", ".csv", ".tsv", ".txt"] {
        if lower[..stem.len()].ends_with(ext) {
            stem = &stem[..stem.len() - ext.len()];
        }
    }
    if is_dash(data) || stem.is_empty() {
        target.to_owned()
    } else {
        stem.to_owned()
    }
}

/// `model.json` -> `model.curves/` beside it.
fn curves_beside(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_owned());
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    out.with_file_name(format!("{stem}.curves"))
}

/// The three pictures and their points, each written atomically.
pub fn write_curves(dir: &Path, curves: &Curves) -> Result<(), Failed> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failed::new(Exit::Failure, anyhow::anyhow!("--curves {}: {e}", dir.display())))?;
    for plot in Plot::ALL {
        let svg = plots::svg(curves, plot).map_err(|e| Failed::new(Exit::Failure, anyhow::anyhow!(e)))?;
        write_atomically(&dir.join(plot.file_name()), svg.as_bytes(), "curve")?;
    }
    let mut json = serde_json::to_vec_pretty(curves).map_err(|e| Failed::new(Exit::Failure, anyhow::Error::from(e)))?;
    json.push(b'\n');
    write_atomically(&dir.join("curves.json"), &json, "curve points")?;
    Ok(())
}
