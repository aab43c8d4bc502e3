# Predictions in BigQuery (bigquery_enabled, off by default): a dataset in
# the buckets' location and one table, `predictions`, that the scorer
# appends each scored input's Parquet output to with a load job
# (scorer-cloud's bigquery module: jobs.insert, WRITE_APPEND, CREATE_NEVER,
# one job id per input generation, so a redelivery never loads twice).
# Terraform creates the table and its schema; the load jobs never create or
# change either.
#
# The push service and the shard job's tasks are told the table, where the
# job runs, and to write Parquet:
#   BIGQUERY_TABLE     project.dataset.table
#   BIGQUERY_LOCATION  the dataset's location (US, EU or a region)
#   OUTPUT_FORMAT      parquet
#
# The table's input columns are var.bigquery_input_columns: they must be the
# columns of the files scored (docs/DEPLOY.md, "BigQuery and a results topic").
#
# Nothing here exists with bigquery_enabled = false, and none of these
# variables is set.

locals {
  bigquery_enabled = var.bigquery_enabled ? 1 : 0

  # A dataset id takes letters, digits and underscores only: the service
  # name with its hyphens replaced, unless one is given.
  bigquery_dataset_id = var.bigquery_dataset_id != "" ? var.bigquery_dataset_id : replace(var.service_name, "-", "_")

  # The buckets' location as BigQuery spells it: its multi-regions in
  # capitals (US, EU), regions in lower case (europe-west1). A load job
  # reads the output bucket, which must be in the dataset's location: the
  # same variable places both.
  bigquery_location = contains(["US", "EU"], local.bucket_location) ? local.bucket_location : lower(local.bucket_location)

  # BIGQUERY_TABLE: project.dataset.table (scorer-cloud's TableRef::parse).
  bigquery_table = var.bigquery_enabled ? "${one(google_bigquery_table.predictions[*].project)}.${one(google_bigquery_table.predictions[*].dataset_id)}.${one(google_bigquery_table.predictions[*].table_id)}" : ""

  # Merged into the push service's environment (cloud_run.tf) and the shard
  # job's (cloud_run_job.tf). With the table, the predictions are written as
  # Parquet (OUTPUT_FORMAT), the format the schema below is made for:
  # columns matched by name, typed probability, prediction and scored_at,
  # and the provenance columns on (PROVENANCE's default for Parquet). The
  # binary refuses to start with BIGQUERY_TABLE and no provenance, which
  # the CSV default would be.
  bigquery_env = var.bigquery_enabled ? {
    BIGQUERY_TABLE    = local.bigquery_table
    BIGQUERY_LOCATION = one(google_bigquery_dataset.predictions[*].location)
    OUTPUT_FORMAT     = "parquet"
  } : {}

  # The input columns: var.bigquery_input_columns, by default the SCL flight
  # file's raw 18-column layout (data/README.md; bench/gen_scl.py writes it),
  # which the predictions output carries through unchanged, as text. They
  # must be the columns of the files scored: a Parquet load matches the
  # file's columns to the table's by name, and a column the table lacks
  # fails the load job (the shipped data/scl_flights_2017.csv has 5:
  # split, OPERA, TIPOVUELO, MES, atraso_15).
  #
  # Column names: the table's columns are named exactly as the file's
  # (Fecha-I, AÑO), using BigQuery's flexible column names, which allow '-'
  # and letters of any alphabet. A load matches Parquet columns to the
  # table's by name, so the Parquet output needs no renaming and the names
  # read the same in the CSV, the Parquet and the table. The cost: SQL must
  # quote them (SELECT `Fecha-I`, `AÑO`), legacy SQL cannot read them, and
  # clients of the Storage Read/Write APIs need their flexible-name handling.
  # A consumer that wants plain names can add a view that renames them
  # ('-' and 'Ñ' to '_': Fecha_I, A_O).
  #
  # Every column NULLABLE: a load appends a Parquet file whose columns may
  # be optional (nullable) whatever their content, and BigQuery refuses to
  # load a nullable column into a REQUIRED one.
  predictions_schema = concat(
    [for name in var.bigquery_input_columns : {
      name        = name
      type        = "STRING"
      mode        = "NULLABLE"
      description = "Input column ${name}, as it was in the input file."
    }],
    [
      { name = "probability", type = "FLOAT64", mode = "NULLABLE", description = "The model's probability of a delay over 15 minutes." },
      { name = "prediction", type = "INT64", mode = "NULLABLE", description = "1 when probability reaches the model's threshold, else 0." },
      { name = "source_uri", type = "STRING", mode = "NULLABLE", description = "The scored input: gs://bucket/object." },
      { name = "source_generation", type = "INT64", mode = "NULLABLE", description = "The input object's generation." },
      { name = "row_number", type = "INT64", mode = "NULLABLE", description = "The row's number in the input file (data records from 1, as errors.csv counts them); null in a large input's shards after the first." },
      { name = "model_version", type = "STRING", mode = "NULLABLE", description = "The model that scored the row (sha256:... of its artifact)." },
      { name = "scored_at", type = "TIMESTAMP", mode = "NULLABLE", description = "When the input was scored; the table is partitioned by its day." },
    ],
  )
}

resource "google_bigquery_dataset" "predictions" {
  #checkov:skip=CKV_GCP_81:Predictions of public flight data; Google-managed encryption is enough and a CMEK would need a KMS key ring outside this module (as for the buckets and topics).
  count = local.bigquery_enabled

  project     = var.project_id
  dataset_id  = local.bigquery_dataset_id
  location    = local.bigquery_location
  description = "The scorer's predictions (${var.service_name}), appended by load jobs."

  # (labels: the provider's default_labels, like every other resource)

  # terraform destroy deletes the predictions table (unless
  # deletion_protection) and then the dataset; a table someone else added
  # makes it refuse instead of deleting that table too.
  delete_contents_on_destroy = false

  lifecycle {
    precondition {
      condition     = can(regex("^(US|EU|[a-z]+-[a-z]+[0-9]+)$", local.bigquery_location))
      error_message = "bigquery_enabled places the dataset in the buckets' location, and BigQuery has no location \"${local.bigquery_location}\" (it has the US and EU multi-regions and single regions, no dual-regions or ASIA): set bucket_location to one BigQuery has, or leave it empty for the region."
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "predictions" {
  #checkov:skip=CKV_GCP_80:Predictions of public flight data; Google-managed encryption is enough and a CMEK would need a KMS key ring outside this module.
  #checkov:skip=CKV_GCP_121:Deletion protection follows var.deletion_protection, as the Cloud Run services' and the shard job's do (off by default so that destroy.sh can take the scorer down; destroy.sh refuses before deleting anything while it is on).
  count = local.bigquery_enabled

  project     = var.project_id
  dataset_id  = google_bigquery_dataset.predictions[0].dataset_id
  table_id    = var.bigquery_table_id
  description = "One row per scored input row: the input's columns, the prediction, and where and when it came from."

  deletion_protection = var.deletion_protection

  # One partition per day of scored_at: a query over recent predictions
  # reads only their days.
  time_partitioning {
    type  = "DAY"
    field = "scored_at"
  }

  schema = jsonencode(local.predictions_schema)
}

# --- who may load: the push service's account and the shard job's ------------

# Append to the tables of this dataset only (bigquery.tables.updateData, and
# reading the table's schema): no other dataset.
resource "google_bigquery_dataset_iam_member" "runtime_edits_predictions" {
  count = local.bigquery_enabled

  project    = var.project_id
  dataset_id = google_bigquery_dataset.predictions[0].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.runtime.member
}

resource "google_bigquery_dataset_iam_member" "shard_edits_predictions" {
  count = var.bigquery_enabled && var.shard_job_enabled ? 1 : 0

  project    = var.project_id
  dataset_id = google_bigquery_dataset.predictions[0].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.shard[0].member
}

# Running a load job needs bigquery.jobs.create, which exists only on the
# project (a job belongs to a project, not to a dataset): roles/bigquery.jobUser
# is its smallest predefined role. It also lets the account read back its
# own jobs (jobs.get after a 409), and reads no data. The files the job
# loads are read with the account's own objectViewer on the output bucket
# (iam.tf, cloud_run_job.tf).
resource "google_project_iam_member" "runtime_runs_bigquery_jobs" {
  count = local.bigquery_enabled

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.runtime.member
}

resource "google_project_iam_member" "shard_runs_bigquery_jobs" {
  count = var.bigquery_enabled && var.shard_job_enabled ? 1 : 0

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.shard[0].member
}
