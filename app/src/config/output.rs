//! Where the predictions go and in what shape, the same for the service and
//! its job's tasks: the format, the CSV delimiter, the provenance columns,
//! a BigQuery table to load them into, a topic told of every commit.

use super::{ConfigError, err};
use crate::score::{OutputFormat, OutputOptions, Provenance};

/// The flags (and environment variables) of the outputs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Format of the predictions object: `csv` (every input record as it
    /// came, the new columns appended), `jsonl` (one JSON object per row)
    /// or `parquet` (typed columns, zstd, row groups of 65,536 rows).
    #[arg(
        long = "output-format",
        env = "OUTPUT_FORMAT",
        default_value = "csv",
        value_name = "FORMAT"
    )]
    pub output_format: String,
    /// CSV only: the predictions' delimiter (`,`, `;`, `|` or `tab`), every
    /// field re-serialised in it; the input's own (pass-through) when unset.
    #[arg(long, env = "OUTPUT_DELIMITER", value_name = "CHAR")]
    pub output_delimiter: Option<String>,
    /// Provenance columns (source_uri, source_generation, row_number,
    /// model_version, scored_at): `on`, `off`, or `auto` (on for parquet and
    /// jsonl, off for csv).
    #[arg(long, env = "PROVENANCE", default_value = "auto", value_name = "on|off|auto")]
    pub provenance: String,
    /// Load each committed file's predictions into this BigQuery table
    /// (`project.dataset.table`, created beforehand): a load job whose id
    /// is derived from the table and the input generation, so it runs
    /// once. Needs PROVENANCE on (the default for parquet and jsonl).
    #[arg(long, env = "BIGQUERY_TABLE", value_name = "PROJECT.DATASET.TABLE")]
    pub bigquery_table: Option<String>,
    /// The BigQuery location of the dataset (e.g. `EU`), for the load jobs.
    #[arg(long, env = "BIGQUERY_LOCATION")]
    pub bigquery_location: Option<String>,
    /// Test-only: a stand-in of the BigQuery API (http://HOST:PORT).
    #[arg(long, env = "BIGQUERY_ENDPOINT", hide = true)]
    pub bigquery_endpoint: Option<String>,
    /// Publish one message per committed file (scored or failed) to this
    /// Pub/Sub topic (`projects/P/topics/T`).
    #[arg(long, env = "RESULTS_TOPIC", value_name = "TOPIC")]
    pub results_topic: Option<String>,
    /// The Pub/Sub emulator, for the results topic (tests, local runs).
    #[arg(long, env = "PUBSUB_EMULATOR_HOST", value_name = "HOST:PORT")]
    pub pubsub_emulator_host: Option<String>,
}

/// A BigQuery destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQuerySettings {
    pub table: String,
    pub location: Option<String>,
    pub endpoint: Option<String>,
}

/// Validated output settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSettings {
    pub format: OutputFormat,
    pub delimiter: Option<u8>,
    pub provenance: bool,
    pub bigquery: Option<BigQuerySettings>,
    /// `projects/P/topics/T`.
    pub results_topic: Option<String>,
    /// `HOST:PORT` of the Pub/Sub emulator, if the topic is there.
    pub pubsub_emulator_host: Option<String>,
}

impl OutputSettings {
    pub fn from_args(args: &OutputArgs) -> Result<OutputSettings, ConfigError> {
        let format: OutputFormat = args
            .output_format
            .parse()
            .map_err(|e: crate::score::output::UnknownOutputFormat| err("OUTPUT_FORMAT", e.to_string()))?;
        let delimiter = match args
            .output_delimiter
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            None => None,
            Some(_) if format != OutputFormat::Csv => {
                return Err(err(
                    "OUTPUT_DELIMITER",
                    format!("applies to csv output only, not {format}"),
                ));
            }
            Some(text) => Some(parse_delimiter(text).map_err(|m| err("OUTPUT_DELIMITER", m))?),
        };
        let provenance = match args.provenance.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => true,
            "off" | "false" | "0" | "no" => false,
            "auto" | "" => format.provenance_by_default(),
            other => return Err(err("PROVENANCE", format!("{other:?}: use on, off or auto"))),
        };
        let bigquery = match args.bigquery_table.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(table) => {
                scorer_cloud::bigquery::TableRef::parse(table).map_err(|e| err("BIGQUERY_TABLE", e.to_string()))?;
                if !provenance {
                    return Err(err(
                        "BIGQUERY_TABLE",
                        "needs PROVENANCE on: the table is partitioned on scored_at, and rows of many files \
                         are told apart by source_uri and source_generation",
                    ));
                }
                Some(BigQuerySettings {
                    table: table.to_owned(),
                    location: args.bigquery_location.clone().filter(|l| !l.trim().is_empty()),
                    endpoint: args.bigquery_endpoint.clone().filter(|e| !e.trim().is_empty()),
                })
            }
        };
        let results_topic = match args.results_topic.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(topic) => {
                let parts: Vec<&str> = topic.split('/').collect();
                if parts.len() != 4
                    || parts[0] != "projects"
                    || parts[2] != "topics"
                    || parts[1].is_empty()
                    || parts[3].is_empty()
                {
                    return Err(err(
                        "RESULTS_TOPIC",
                        format!("{topic:?} is not projects/PROJECT/topics/TOPIC"),
                    ));
                }
                Some(topic.to_owned())
            }
        };
        let pubsub_emulator_host = args.pubsub_emulator_host.clone().filter(|h| !h.trim().is_empty());
        if let Some(host) = &pubsub_emulator_host {
            crate::storage::emulator_url(host).map_err(|m| err("PUBSUB_EMULATOR_HOST", m))?;
        }
        Ok(OutputSettings {
            format,
            delimiter,
            provenance,
            bigquery,
            results_topic,
            pubsub_emulator_host,
        })
    }

    /// The engine's output options for one file.
    pub fn options(&self, provenance: impl FnOnce() -> Provenance) -> OutputOptions {
        OutputOptions {
            format: self.format,
            delimiter: self.delimiter,
            provenance: self.provenance.then(provenance),
        }
    }

    /// The environment that gives a job's task the same outputs.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("OUTPUT_FORMAT".to_owned(), self.format.to_string()),
            (
                "PROVENANCE".to_owned(),
                if self.provenance { "on" } else { "off" }.to_owned(),
            ),
        ];
        if let Some(d) = self.delimiter {
            env.push((
                "OUTPUT_DELIMITER".to_owned(),
                if d == b'\t' {
                    "tab".to_owned()
                } else {
                    (d as char).to_string()
                },
            ));
        }
        // The task that commits does what follows the commit.
        if let Some(bq) = &self.bigquery {
            env.push(("BIGQUERY_TABLE".to_owned(), bq.table.clone()));
            env.extend(bq.location.clone().map(|l| ("BIGQUERY_LOCATION".to_owned(), l)));
            env.extend(bq.endpoint.clone().map(|e| ("BIGQUERY_ENDPOINT".to_owned(), e)));
        }
        if let Some(topic) = &self.results_topic {
            env.push(("RESULTS_TOPIC".to_owned(), topic.clone()));
        }
        if let Some(host) = &self.pubsub_emulator_host {
            env.push(("PUBSUB_EMULATOR_HOST".to_owned(), host.clone()));
        }
        env
    }
}

/// `,` `;` `|` or `tab` (or a literal tab).
pub fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        "," | ";" | "|" => Ok(text.as_bytes()[0]),
        other => Err(format!("{other:?}: use ',', ';', '|' or 'tab'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(f: impl FnOnce(&mut OutputArgs)) -> Result<OutputSettings, ConfigError> {
        let mut args = OutputArgs {
            output_format: "csv".into(),
            provenance: "auto".into(),
            ..Default::default()
        };
        f(&mut args);
        OutputSettings::from_args(&args)
    }

    #[test]
    fn provenance_follows_the_format_unless_told() {
        assert!(!settings(|_| {}).unwrap().provenance);
        assert!(settings(|a| a.output_format = "parquet".into()).unwrap().provenance);
        assert!(
            !settings(|a| {
                a.output_format = "jsonl".into();
                a.provenance = "off".into();
            })
            .unwrap()
            .provenance
        );
    }

    #[test]
    fn bad_settings_are_named() {
        for (f, setting) in [
            (
                Box::new(|a: &mut OutputArgs| a.output_format = "xlsx".into()) as Box<dyn FnOnce(&mut OutputArgs)>,
                "OUTPUT_FORMAT",
            ),
            (
                Box::new(|a: &mut OutputArgs| a.output_delimiter = Some("::".into())),
                "OUTPUT_DELIMITER",
            ),
            (
                Box::new(|a: &mut OutputArgs| {
                    a.output_format = "parquet".into();
                    a.output_delimiter = Some(",".into());
                }),
                "OUTPUT_DELIMITER",
            ),
            (
                Box::new(|a: &mut OutputArgs| a.provenance = "maybe".into()),
                "PROVENANCE",
            ),
            (
                Box::new(|a: &mut OutputArgs| {
                    a.output_format = "parquet".into();
                    a.bigquery_table = Some("p.d".into());
                }),
                "BIGQUERY_TABLE",
            ),
            (
                Box::new(|a: &mut OutputArgs| a.bigquery_table = Some("p.d.t".into())),
                "BIGQUERY_TABLE",
            ),
            (
                Box::new(|a: &mut OutputArgs| a.results_topic = Some("results".into())),
                "RESULTS_TOPIC",
            ),
        ] {
            let e = settings(f).unwrap_err();
            assert_eq!(e.setting, setting, "{e}");
        }
    }

    #[test]
    fn a_task_is_given_the_same_outputs() {
        let s = settings(|a| {
            a.output_delimiter = Some("tab".into());
            a.provenance = "on".into();
        })
        .unwrap();
        let env = s.env();
        let args = OutputArgs {
            output_format: env[0].1.clone(),
            provenance: env[1].1.clone(),
            output_delimiter: Some(env[2].1.clone()),
            ..Default::default()
        };
        assert_eq!(OutputSettings::from_args(&args).unwrap(), s);
    }
}
