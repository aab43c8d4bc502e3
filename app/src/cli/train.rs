//! `scorer train`: fit a logistic regression and write its artifact.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;

use super::exit::{Exit, Failed};
use super::files::{check_outputs, open_input, write_atomically};
use scorer::model::fit::{self, FitError, FitSpec, Split};

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
    /// Weight classes inversely to their frequency (scikit-learn's
    /// class_weight='balanced').
    #[arg(long)]
    balanced: bool,
    /// Inverse L2 regularisation strength (scikit-learn's C).
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// Probability from which the prediction is 1.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Name recorded in the artifact.
    #[arg(long, default_value = "model")]
    name: String,
    /// Where to write the artifact.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn train(args: TrainArgs) -> Result<Exit, Failed> {
    let stdin = args.data.as_os_str() == "-";
    check_outputs(
        (!stdin).then_some(("--data", args.data.as_path())),
        &[("--out", &args.out)],
    )?;
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
    let spec = FitSpec {
        name: args.name,
        target: args.target,
        categorical: args.categorical,
        numeric: args.numeric,
        split,
        balanced: args.balanced,
        c: args.c,
        threshold: args.threshold,
        max_iterations: 1000,
    };
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
    write_atomically(&args.out, &fitted.json, "model artifact")?;
    let a = fitted.model.artifact();
    println!(
        "fitted {} on {} rows ({} positive) in {} L-BFGS iterations",
        a.name, a.training.rows, a.training.positives, a.training.iterations
    );
    if !fitted.skipped.is_empty() {
        println!("skipped {}", fitted.skipped_text);
    }
    println!("wrote {} (version {})", args.out.display(), fitted.model.version());
    match &a.training.holdout {
        Some(m) => println!("held-out metrics:\n{}", m.render()),
        None => println!("no held-out rows: no metrics"),
    }
    Ok(Exit::Ok)
}
