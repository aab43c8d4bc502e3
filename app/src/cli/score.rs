//! `scorer score`: a file in, predictions (and rejected rows) out.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use scorer::model::curves::Curves;
use serde::Serialize;

use super::ending::{self, ReaderGone, Stream};
use super::failed::{Exit, Failed};
use super::files::{
    check_outputs, check_std_streams, is_dash, open_input, refuse_dash, refuse_directory_output, sibling, temp_beside,
    write_error,
};
use scorer::config::{OutputArgs, OutputSettings};
use scorer::model::Model;
use scorer::score::{self, CsvRejects, Provenance, ScoreError, ScoreOptions, Summary};

#[derive(Args)]
pub struct ScoreArgs {
    /// Input: CSV or JSON Lines (told by its first character), gzip or not;
    /// `-` reads standard input.
    input: PathBuf,
    /// Model artifact (default: the shipped data/model.json, built in); a
    /// file, not `-`.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Where to write the predictions CSV (written atomically); `-` writes
    /// them to standard output, and then --errors FILE is required (whether
    /// or not a row is rejected).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Where to write rejected rows (default: OUT with .errors.csv); only
    /// created when a row is rejected. A file, not `-`.
    #[arg(long, value_name = "FILE", required_if_eq("out", "-"))]
    errors: Option<PathBuf>,
    /// Add an `explanation` column with this many top contributions per row.
    #[arg(long, default_value_t = 0, value_name = "N")]
    explain: usize,
    /// Fail (exit status 4, outputs still written) when more than N rows
    /// are rejected.
    #[arg(long, value_name = "N")]
    max_rejected: Option<u64>,
    /// Fail (exit status 4, outputs still written) when more than this
    /// fraction of the rows (0-1) is rejected.
    #[arg(long, value_name = "F")]
    max_rejected_fraction: Option<f64>,
    /// Print the summary as JSON on standard output, and a failure as JSON
    /// on standard error.
    #[arg(long)]
    json: bool,
    /// Target chunk size in MiB, 1-1024 (memory in flight is a few chunks).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    chunk_mib: u16,
    /// Format of the predictions: csv (every input record as it came, the
    /// new columns appended), jsonl (one JSON object per row) or parquet
    /// (typed columns, zstd). Default: from --out's extension (.parquet,
    /// .jsonl, .ndjson), else csv.
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// CSV only: the predictions' delimiter (`,`, `;`, `|` or `tab`), every
    /// field re-serialised in it; the input's own when unset.
    #[arg(long, value_name = "CHAR")]
    output_delimiter: Option<String>,
    /// Provenance columns (source_uri, source_generation, row_number,
    /// model_version, scored_at): on, off, or auto (on for parquet and jsonl).
    #[arg(long, default_value = "auto", value_name = "on|off|auto")]
    provenance: String,
    /// When the input holds the model's label column: write the ROC,
    /// precision-recall and calibration curves of its labelled rows here
    /// (three SVG files and curves.json), the model's threshold marked.
    #[arg(long, value_name = "DIR")]
    curves: Option<PathBuf>,
}

/// Where a local file's rows came from: its absolute path as a `file://`
/// URI (`-` for standard input), its modification time in microseconds as
/// its generation (a rewrite of the file is a new one), the model, now.
fn local_provenance(input: &Path, stdin: bool, model: &Model) -> Provenance {
    let micros = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    };
    let (source_uri, generation) = if stdin {
        ("-".to_owned(), 0)
    } else {
        let path = std::fs::canonicalize(input).unwrap_or_else(|_| input.to_path_buf());
        let modified = std::fs::metadata(input).and_then(|m| m.modified()).map_or(0, micros);
        (format!("file://{}", path.display()), modified)
    };
    Provenance {
        source_uri,
        source_generation: generation,
        model_version: model.version().to_owned(),
        scored_at_micros: micros(std::time::SystemTime::now()),
        row_numbers: true,
    }
}

/// The `--json` summary.
#[derive(Serialize)]
struct Report<'a> {
    input: String,
    predictions: String,
    errors: Option<String>,
    model_name: &'a str,
    model_version: &'a str,
    output_format: scorer::score::OutputFormat,
    #[serde(flatten)]
    summary: &'a Summary,
    /// Set when the run failed a --max-rejected rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    too_many_rejected: Option<String>,
}

/// A failure, as `--json` reports it on standard error.
#[derive(Serialize)]
struct JsonFailure {
    error: String,
    exit: u8,
}

pub fn score_file(args: ScoreArgs) -> Result<Exit, Failed> {
    let json = args.json;
    score_file_inner(args).map_err(|failed| {
        if json && !ReaderGone::is(&failed) {
            let report = JsonFailure {
                error: super::render(&failed.error),
                exit: failed.exit.code(),
            };
            if let Ok(text) = serde_json::to_string(&report) {
                eprintln!("{text}");
            }
            Failed {
                exit: failed.exit,
                error: anyhow::anyhow!(""),
            }
        } else {
            failed
        }
    })
}

fn score_file_inner(args: ScoreArgs) -> Result<Exit, Failed> {
    if let Some(f) = args.max_rejected_fraction
        && !(0.0..=1.0).contains(&f)
    {
        return Err(Failed::usage(format!(
            "--max-rejected-fraction {f}: must be between 0 and 1"
        )));
    }
    let stdin = is_dash(&args.input);
    let stdout = is_dash(&args.out);
    if let Some(errors) = &args.errors {
        let why = if stdout {
            "with --out -, standard output carries the predictions: give --errors a file"
        } else {
            "give --errors a file"
        };
        refuse_dash("--errors", errors, why)?;
    }
    if let Some(model) = &args.model {
        refuse_dash("--model", model, "give --model a file")?;
    }
    let errors_path = match (&args.errors, stdout) {
        (Some(p), _) => p.clone(),
        (None, false) => sibling(&args.out, "errors.csv"),
        (None, true) => return Err(Failed::usage("--out - needs --errors PATH for rejected rows")),
    };
    let mut outputs: Vec<(&str, &Path)> = Vec::new();
    if !stdout {
        outputs.push(("--out", &args.out));
    }
    outputs.push(("--errors", &errors_path));
    for (flag, path) in &outputs {
        refuse_directory_output(flag, path)?;
    }
    check_outputs((!stdin).then_some(("input", args.input.as_path())), &outputs)?;
    // The model is an input too.
    if let Some(model) = &args.model {
        check_outputs(Some(("--model", model)), &outputs)?;
    }
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    if !stdin {
        inputs.push(("the input", &args.input));
    }
    if let Some(model) = &args.model {
        inputs.push(("--model", model));
    }
    check_std_streams(stdin, stdout, &inputs, &outputs)?;

    let model = match &args.model {
        // Any failure to load the given model is one status (1), whether
        // the file is missing or holds something else; the path is named
        // once.
        Some(path) => std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Model::from_json(&bytes).map_err(anyhow::Error::from))
            .map_err(|e| {
                Failed::new(
                    Exit::Failure,
                    anyhow::anyhow!("cannot load the model {}: {e}", path.display()),
                )
            })?,
        None => Model::default_model()?,
    };
    let format = args.format.clone().unwrap_or_else(|| {
        let out = args.out.to_string_lossy().to_ascii_lowercase();
        let out = out.strip_suffix(".gz").unwrap_or(&out);
        if out.ends_with(".parquet") {
            "parquet".to_owned()
        } else if out.ends_with(".jsonl") || out.ends_with(".ndjson") {
            "jsonl".to_owned()
        } else {
            "csv".to_owned()
        }
    });
    let outputs = OutputSettings::from_args(&OutputArgs {
        output_format: format,
        output_delimiter: args.output_delimiter.clone(),
        provenance: args.provenance.clone(),
        ..OutputArgs::default()
    })
    .map_err(|e| {
        let flag = match e.setting {
            "OUTPUT_FORMAT" => "--format",
            "OUTPUT_DELIMITER" => "--output-delimiter",
            _ => "--provenance",
        };
        Failed::usage(format!("{flag}: {}", e.message))
    })?;
    let options = ScoreOptions {
        chunk_bytes: usize::from(args.chunk_mib) << 20,
        explain: args.explain,
        output: outputs.options(|| local_provenance(&args.input, stdin, &model)),
        ..ScoreOptions::default()
    };
    // Parquet is read by ranges, from its footer: a file, found by its
    // magic number whatever its name.
    let parquet = if stdin {
        None
    } else {
        use std::os::unix::fs::FileExt as _;
        let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
        let file = open_input(&args.input, "input")?;
        let size = file.metadata().map_or(0, |m| m.len());
        // Parquet both starts and ends with PAR1 (a CSV header may start so).
        let is_parquet = size >= 12
            && file.read_exact_at(&mut head, 0).is_ok()
            && file.read_exact_at(&mut tail, size - 4).is_ok()
            && score::parquet_in::is_parquet(&head)
            && score::parquet_in::is_parquet(&tail);
        is_parquet.then_some(file)
    };
    let input: Box<dyn Read + Send> = if stdin {
        Box::new(io::stdin())
    } else if parquet.is_some() {
        Box::new(io::empty())
    } else {
        let file = open_input(&args.input, "input")?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if io::stderr().is_terminal() && size > 16 << 20 {
            let bar = indicatif::ProgressBar::new(size).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Box::new(bar.wrap_read(file))
        } else {
            Box::new(file)
        }
    };
    let out_tmp = (!stdout).then(|| temp_beside(&args.out));
    let errors_tmp = temp_beside(&errors_path);
    let result = (|| -> Result<_, ScoreError> {
        let sink: Box<dyn Write + Send> = match &out_tmp {
            Some(tmp) => Box::new(ending::create(tmp).map_err(ScoreError::Write)?),
            None => Box::new(io::stdout()),
        };
        let mut out = BufWriter::with_capacity(1 << 20, sink);
        let mut rejects = CsvRejects::new(|| ending::create(&errors_tmp).map(|f| BufWriter::with_capacity(1 << 16, f)));
        let summary = match parquet {
            Some(file) => score::parquet_in::score(
                std::sync::Arc::new(score::parquet_in::FileRanges(file)),
                &model,
                &mut out,
                &mut rejects,
                &options,
            )?,
            None => score::score(input, &model, &mut out, &mut rejects, &options)?,
        };
        out.flush().map_err(ScoreError::Write)?;
        if let Some(tmp) = &out_tmp {
            File::open(tmp).and_then(|f| f.sync_all()).map_err(ScoreError::Write)?;
        }
        let wrote_errors = match rejects.finish().map_err(ScoreError::Write)? {
            Some(w) => {
                w.into_inner()
                    .map_err(|e| ScoreError::Write(e.into_error()))?
                    .sync_all()
                    .map_err(ScoreError::Write)?;
                true
            }
            None => false,
        };
        Ok((summary, wrote_errors))
    })();
    let (summary, wrote_errors) = match result {
        Ok(done) => done,
        Err(e) => {
            if let Some(tmp) = &out_tmp {
                ending::remove(tmp);
            }
            ending::remove(&errors_tmp);
            let input = args.input.display();
            return Err(match e {
                ScoreError::Rejected(rejection) => {
                    Failed::new(Exit::Unscorable, anyhow::anyhow!("{input} was not scored: {rejection}"))
                }
                ScoreError::Read(e) => Failed::new(Exit::Failure, anyhow::anyhow!("cannot read {input}: {e}")),
                // The reader of the predictions went away (`| head`).
                ScoreError::Write(e) if stdout && e.kind() == io::ErrorKind::BrokenPipe => ReaderGone::failed(),
                ScoreError::Write(e) => {
                    let (path, what) = if stdout {
                        (Path::new("standard output"), "predictions")
                    } else {
                        (args.out.as_path(), "predictions")
                    };
                    write_error(path, what, e)
                }
                ScoreError::Engine(e) => Failed::new(Exit::Failure, anyhow::anyhow!("scoring {input}: {e}")),
            });
        }
    };
    let renamed = (|| {
        if let Some(tmp) = &out_tmp {
            ending::rename(tmp, &args.out).map_err(|e| write_error(&args.out, "predictions", e))?;
        }
        if wrote_errors {
            ending::rename(&errors_tmp, &errors_path).map_err(|e| write_error(&errors_path, "rejected rows", e))?;
        }
        Ok::<_, Failed>(())
    })();
    if let Err(failed) = renamed {
        // Nothing half-done is left beside the targets.
        if let Some(tmp) = &out_tmp {
            ending::remove(tmp);
        }
        ending::remove(&errors_tmp);
        return Err(failed);
    }
    let too_many = too_many_rejected(&summary, args.max_rejected, args.max_rejected_fraction);
    let curves_note = match &args.curves {
        Some(dir) => {
            let of = format!("labelled rows of {}", args.input.display());
            Some(match Curves::new(&summary.evaluation, model.threshold(), &of) {
                Some(curves) => {
                    super::train::write_curves(dir, &curves)?;
                    format!("curves of the {of} in {}\n", dir.display())
                }
                None => format!(
                    "no curves: the input has no {} column holding both 0 and 1\n",
                    model.target()
                ),
            })
        }
        None => None,
    };
    let predictions = if stdout {
        "-".to_owned()
    } else {
        args.out.display().to_string()
    };
    if args.json {
        let report = Report {
            input: args.input.display().to_string(),
            predictions,
            errors: wrote_errors.then(|| errors_path.display().to_string()),
            model_name: model.name(),
            model_version: model.version(),
            output_format: options.output.format,
            summary: &summary,
            too_many_rejected: too_many.clone(),
        };
        let text = serde_json::to_string_pretty(&report)?;
        // With --out -, standard output holds the predictions.
        ending::say(
            if stdout { Stream::Stderr } else { Stream::Stdout },
            &format!("{text}\n"),
        )?;
    } else {
        let rate = summary.rows_in as f64 / summary.seconds.max(1e-9);
        let mut text = format!(
            "{} rows: {} scored, {} rejected in {:.2} s ({:.0} rows/s); model {} {}\npredictions: {predictions}\n",
            summary.rows_in,
            summary.rows_scored,
            summary.rows_rejected,
            summary.seconds,
            rate,
            model.name(),
            model.version()
        );
        if wrote_errors {
            text.push_str(&format!("rejected rows: {}\n", errors_path.display()));
        }
        if let Some(note) = &curves_note {
            text.push_str(note);
        }
        if !summary.ignored_values.is_empty() {
            let counts: Vec<String> = summary
                .ignored_values
                .iter()
                .map(|(column, n)| format!("{column} {n}"))
                .collect();
            text.push_str(&format!(
                "unknown or missing categories ignored (added nothing): {}\n",
                counts.join(", ")
            ));
        }
        if let Some(m) = &summary.metrics {
            text.push_str(&format!(
                "against {} ({} labelled rows):\n{}\n",
                model.target(),
                summary.labelled_rows,
                m.render()
            ));
        }
        ending::say(if stdout { Stream::Stderr } else { Stream::Stdout }, &text)?;
    }
    match too_many {
        Some(why) => Err(Failed::new(Exit::TooManyRejected, anyhow::anyhow!("{why}"))),
        None => Ok(Exit::Ok),
    }
}

/// Which --max-rejected rule the run broke, if any.
fn too_many_rejected(summary: &Summary, max: Option<u64>, max_fraction: Option<f64>) -> Option<String> {
    let rejected = summary.rows_rejected;
    if let Some(max) = max
        && rejected > max
    {
        return Some(format!("{rejected} rows rejected, more than --max-rejected {max}"));
    }
    let fraction = rejected as f64 / summary.rows_in.max(1) as f64;
    match max_fraction {
        Some(max) if fraction > max => Some(format!(
            "{rejected} of {} rows rejected ({:.4}), more than --max-rejected-fraction {max}",
            summary.rows_in, fraction
        )),
        _ => None,
    }
}
