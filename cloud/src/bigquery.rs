//! Starting BigQuery load jobs (`jobs.insert` of the BigQuery API v2 with a
//! load configuration): files already written to Cloud Storage are
//! appended to an existing table.
//!
//! # Exactly once
//!
//! The caller chooses the job id, deterministically from the input it
//! loads (one id per object generation, say). BigQuery refuses a second job
//! with an id already used in the project (HTTP 409, `ALREADY_EXISTS`, for
//! as long as it keeps the job's history): a redelivered message, a retried
//! request or a second replica that starts the same load gets that refusal
//! instead of a second job, so the rows are appended once. That refusal is
//! therefore no error here: [`BigQueryLoads::start`] then reads the job
//! (`jobs.get`) to confirm that it exists and loads into the same table, and
//! answers [`LoadJob::already_existed`]. A job id that another, different
//! job holds is an error, as is a 409 whose job cannot be read back.
//!
//! The load itself is one atomic append (`WRITE_APPEND`) into a table that
//! must exist (`CREATE_NEVER`; Terraform creates it with its schema): a job
//! that fails leaves the table as it was.
//!
//! # What it does not do
//!
//! It never waits for the job: BigQuery runs it asynchronously, for as long
//! as it takes, and [`BigQueryLoads::start`] returns as soon as BigQuery
//! accepted (or had already accepted) it. Whether the job then succeeded
//! is not known here: read the job (`bq show -j`, or `jobs.get`) for that.
//! Nor does it retry: a transient failure is returned as
//! [`CloudError::Transient`] for the caller to retry (with the same job id,
//! so that the retry is as safe as a redelivery), and it does not create
//! or change datasets, tables or schemas.

use std::fmt;
use std::str::FromStr;

use google_cloud_auth::credentials::anonymous;
use google_cloud_bigquery_v2::client::JobService;
use google_cloud_bigquery_v2::model::{Job, JobConfiguration, JobConfigurationLoad, JobReference, TableReference};

use crate::CloudError;

/// A client of BigQuery's jobs API, ready to start load jobs.
#[derive(Clone, Debug)]
pub struct BigQueryLoads {
    jobs: JobService,
}

/// A BigQuery table: `project.dataset.table`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub project: String,
    pub dataset: String,
    pub table: String,
}

/// Why a table name is not `project.dataset.table`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableRefError {
    #[error("table {0:?}: expected project.dataset.table, three parts separated by '.', found {1}")]
    PartCount(String, usize),
    #[error("table {0:?}: the {1} is empty")]
    EmptyPart(String, &'static str),
}

impl TableRef {
    /// `project.dataset.table`, each part non-empty.
    pub fn parse(text: &str) -> Result<TableRef, TableRefError> {
        let parts: Vec<&str> = text.split('.').collect();
        let [project, dataset, table] = parts[..] else {
            return Err(TableRefError::PartCount(text.to_owned(), parts.len()));
        };
        for (part, what) in [(project, "project"), (dataset, "dataset"), (table, "table")] {
            if part.trim().is_empty() {
                return Err(TableRefError::EmptyPart(text.to_owned(), what));
            }
        }
        Ok(TableRef {
            project: project.to_owned(),
            dataset: dataset.to_owned(),
            table: table.to_owned(),
        })
    }
}

impl FromStr for TableRef {
    type Err = TableRefError;

    fn from_str(text: &str) -> Result<TableRef, TableRefError> {
        TableRef::parse(text)
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}

/// The format of the files a load reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadFormat {
    /// Columns matched by name; the schema is the table's and the file's.
    Parquet,
    /// Delimited text whose first `skip_leading_rows` lines are skipped (a
    /// header: 1). The delimiter must be an ASCII character.
    Csv {
        skip_leading_rows: u32,
        field_delimiter: char,
    },
    /// One JSON object a line.
    JsonLines,
}

impl LoadFormat {
    /// CSV with one header line and commas.
    pub fn csv() -> LoadFormat {
        LoadFormat::Csv {
            skip_leading_rows: 1,
            field_delimiter: ',',
        }
    }

    /// BigQuery's `sourceFormat`.
    pub fn source_format(&self) -> &'static str {
        match self {
            LoadFormat::Parquet => "PARQUET",
            LoadFormat::Csv { .. } => "CSV",
            LoadFormat::JsonLines => "NEWLINE_DELIMITED_JSON",
        }
    }
}

/// One load: these files appended to that table, as job `job_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadRequest {
    pub table: TableRef,
    /// Chosen by the caller, the same for every attempt at the same input
    /// (letters, digits, '_' and '-', at most 1024): what makes the load
    /// happen once.
    pub job_id: String,
    /// Where the job runs (the dataset's location); BigQuery infers it
    /// from the dataset when `None`, but reading the job back needs it
    /// outside the US and EU multi-regions.
    pub location: Option<String>,
    /// `gs://bucket/object`.
    pub source_uris: Vec<String>,
    pub format: LoadFormat,
}

/// A load job BigQuery holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadJob {
    pub project: String,
    pub job_id: String,
    /// As BigQuery reports it, else as requested.
    pub location: Option<String>,
    /// The job id was taken already (by this same load, started before):
    /// nothing new was started.
    pub already_existed: bool,
}

/// At most this many characters in a job id (BigQuery's limit).
const JOB_ID_MAX: usize = 1024;

impl LoadRequest {
    /// Refuses what BigQuery would refuse, before any call.
    fn check(&self) -> Result<(), CloudError> {
        let id = &self.job_id;
        if id.is_empty()
            || id.len() > JOB_ID_MAX
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(CloudError::Permanent(format!(
                "load job id {id:?}: BigQuery takes 1 to {JOB_ID_MAX} letters, digits, '_' and '-'"
            )));
        }
        if self.source_uris.is_empty() {
            return Err(CloudError::Permanent(format!("load job {id}: no source URI")));
        }
        if let Some(uri) = self
            .source_uris
            .iter()
            .find(|uri| uri.strip_prefix("gs://").is_none_or(|rest| !rest.contains('/')))
        {
            return Err(CloudError::Permanent(format!(
                "load job {id}: source {uri:?} is not gs://bucket/object"
            )));
        }
        if let LoadFormat::Csv {
            field_delimiter,
            skip_leading_rows,
        } = self.format
        {
            if !field_delimiter.is_ascii() || field_delimiter == '\0' {
                return Err(CloudError::Permanent(format!(
                    "load job {id}: CSV delimiter {field_delimiter:?} is not an ASCII character"
                )));
            }
            if i32::try_from(skip_leading_rows).is_err() {
                return Err(CloudError::Permanent(format!(
                    "load job {id}: {skip_leading_rows} leading rows to skip is too many"
                )));
            }
        }
        Ok(())
    }

    /// The job BigQuery is asked to insert.
    fn job(&self) -> Job {
        let mut load = JobConfigurationLoad::new()
            .set_destination_table(destination(&self.table))
            .set_source_uris(self.source_uris.iter().cloned())
            .set_source_format(self.format.source_format())
            .set_write_disposition("WRITE_APPEND")
            .set_create_disposition("CREATE_NEVER");
        match &self.format {
            LoadFormat::Parquet => {}
            LoadFormat::Csv {
                skip_leading_rows,
                field_delimiter,
            } => {
                load = load
                    .set_skip_leading_rows(i32::try_from(*skip_leading_rows).unwrap_or(i32::MAX))
                    .set_field_delimiter(field_delimiter.to_string())
                    // CSV predictions pass input records through as they
                    // came, quoted line breaks included.
                    .set_allow_quoted_newlines(true)
                    .set_autodetect(false)
                    .set_ignore_unknown_values(false);
            }
            LoadFormat::JsonLines => {
                load = load.set_autodetect(false).set_ignore_unknown_values(false);
            }
        }
        Job::new()
            .set_job_reference(self.reference())
            .set_configuration(JobConfiguration::new().set_load(load))
    }

    fn reference(&self) -> JobReference {
        let reference = JobReference::new()
            .set_project_id(&self.table.project)
            .set_job_id(&self.job_id);
        match &self.location {
            Some(location) => reference.set_location(location),
            None => reference,
        }
    }
}

fn destination(table: &TableRef) -> TableReference {
    TableReference::new()
        .set_project_id(&table.project)
        .set_dataset_id(&table.dataset)
        .set_table_id(&table.table)
}

/// BigQuery's answer: the job id is taken.
fn already_exists(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code() == Some(409)
        || e.status()
            .is_some_and(|s| s.code == google_cloud_gax::error::rpc::Code::AlreadyExists)
}

impl BigQueryLoads {
    /// A client of BigQuery; with `endpoint`, talking to that address
    /// anonymously instead of Google.
    pub async fn new(endpoint: Option<&str>) -> Result<BigQueryLoads, CloudError> {
        let mut builder = JobService::builder();
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
        }
        let jobs = builder
            .build()
            .await
            .map_err(|e| CloudError::Permanent(format!("BigQuery client: {e}")))?;
        Ok(BigQueryLoads { jobs })
    }

    /// Starts a load job; never waits for it to finish. A job id BigQuery
    /// already holds for the same table is answered with
    /// `already_existed: true` and starts nothing.
    pub async fn start(&self, load: &LoadRequest) -> Result<LoadJob, CloudError> {
        load.check()?;
        let what = format!("starting BigQuery load job {} into {}", load.job_id, load.table);
        let inserted = self
            .jobs
            .insert_job()
            .set_project_id(&load.table.project)
            .set_job(load.job())
            .send()
            .await;
        match inserted {
            Ok(job) => Ok(LoadJob {
                project: load.table.project.clone(),
                job_id: load.job_id.clone(),
                location: reported_location(&job).or_else(|| load.location.clone()),
                already_existed: false,
            }),
            Err(e) if already_exists(&e) => self.existing(load).await,
            Err(e) => Err(CloudError::classify(&what, &e)),
        }
    }

    /// The job that holds `load`'s id, read back after a 409: it must be a
    /// load into the same table. A job that cannot be read back (403:
    /// `roles/bigquery.jobUser` reads only the jobs its own account started,
    /// and the push service and the job's tasks run as two accounts; 404: a
    /// regional job read without its location) is taken as the same load:
    /// the 409 proved the id is used, and the ids are derived from the
    /// table and the input, so only this load makes it.
    async fn existing(&self, load: &LoadRequest) -> Result<LoadJob, CloudError> {
        let what = format!(
            "BigQuery answered that load job {} exists; reading it back",
            load.job_id
        );
        let read = self
            .jobs
            .get_job()
            .set_project_id(&load.table.project)
            .set_job_id(&load.job_id)
            .set_location(load.location.clone().unwrap_or_default())
            .send()
            .await;
        if let Err(e) = &read
            && matches!(e.http_status_code(), Some(403 | 404))
        {
            return Ok(LoadJob {
                project: load.table.project.clone(),
                job_id: load.job_id.clone(),
                location: load.location.clone(),
                already_existed: true,
            });
        }
        let job = read.map_err(|e| {
            let hint = match (e.http_status_code(), &load.location) {
                (Some(404), None) => " (outside the US and EU multi-regions, reading a job needs its location)",
                _ => "",
            };
            match CloudError::classify(&what, &e) {
                CloudError::Transient(text) => CloudError::Transient(text),
                CloudError::Permanent(text) => CloudError::Permanent(format!("{text}{hint}")),
            }
        })?;
        let table = job
            .configuration
            .as_ref()
            .and_then(|c| c.load.as_ref())
            .and_then(|l| l.destination_table.as_ref());
        let same = table.is_some_and(|t| {
            t.project_id == load.table.project && t.dataset_id == load.table.dataset && t.table_id == load.table.table
        });
        if !same {
            let held_by = match table {
                Some(t) => format!("a load into {}.{}.{}", t.project_id, t.dataset_id, t.table_id),
                None => "a job that is not a load".to_owned(),
            };
            return Err(CloudError::Permanent(format!(
                "BigQuery job id {} is taken by {held_by}, not a load into {}: choose job ids no other job uses",
                load.job_id, load.table
            )));
        }
        Ok(LoadJob {
            project: load.table.project.clone(),
            job_id: load.job_id.clone(),
            location: reported_location(&job).or_else(|| load.location.clone()),
            already_existed: true,
        })
    }
}

fn reported_location(job: &Job) -> Option<String> {
    job.job_reference
        .as_ref()
        .and_then(|r| r.location.clone())
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_three_non_empty_parts() {
        let t = TableRef::parse("p.d.t").unwrap();
        assert_eq!(
            (t.project.as_str(), t.dataset.as_str(), t.table.as_str()),
            ("p", "d", "t")
        );
        assert_eq!(t.to_string(), "p.d.t");
        assert_eq!("p.d.t".parse::<TableRef>(), Ok(t));
        assert_eq!(TableRef::parse("d.t"), Err(TableRefError::PartCount("d.t".into(), 2)));
        assert_eq!(
            TableRef::parse("p.d.t.x"),
            Err(TableRefError::PartCount("p.d.t.x".into(), 4))
        );
        assert_eq!(
            TableRef::parse("p..t"),
            Err(TableRefError::EmptyPart("p..t".into(), "dataset"))
        );
        assert_eq!(TableRef::parse(""), Err(TableRefError::PartCount("".into(), 1)));
    }

    fn request() -> LoadRequest {
        LoadRequest {
            table: TableRef::parse("p.d.t").unwrap(),
            job_id: "scorer_1".into(),
            location: None,
            source_uris: vec!["gs://b/o.parquet".into()],
            format: LoadFormat::Parquet,
        }
    }

    #[test]
    fn what_bigquery_would_refuse_is_refused_before_any_call() {
        assert!(request().check().is_ok());
        for bad in [
            LoadRequest {
                job_id: "a/b".into(),
                ..request()
            },
            LoadRequest {
                job_id: String::new(),
                ..request()
            },
            LoadRequest {
                job_id: "x".repeat(1025),
                ..request()
            },
            LoadRequest {
                source_uris: vec![],
                ..request()
            },
            LoadRequest {
                source_uris: vec!["s3://b/o".into()],
                ..request()
            },
            LoadRequest {
                source_uris: vec!["gs://bucket-only".into()],
                ..request()
            },
            LoadRequest {
                format: LoadFormat::Csv {
                    skip_leading_rows: 1,
                    field_delimiter: 'Ñ',
                },
                ..request()
            },
        ] {
            let e = bad.check().unwrap_err();
            assert!(!e.is_transient(), "{e}");
        }
    }
}
