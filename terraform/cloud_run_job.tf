# The shard job: a Cloud Run job from the services' image whose tasks run
# `scorer shard`. An input larger than INLINE_MAX_BYTES is not scored inside
# its push request: the push service starts an execution of this job (RunJob
# with overrides: INPUT_URI, INPUT_GENERATION, MODEL_NAME, MODEL_VERSION,
# MODEL_CHOSEN_BY and the task count), answers the push, and each task scores one byte range
# with that exact model version, read from the registry in the output bucket
# (_models/<name>/<hex>.json). The task that finds every range recorded
# commits the manifest (docs/DEPLOY.md, "Large files: the shard job").
#
# Nothing here exists with shard_job_enabled = false: the push service then
# has no SHARD_JOB and gives such inputs a committed failure report.

locals {
  shard_enabled  = var.shard_job_enabled ? 1 : 0
  shard_job_name = "${var.service_name}-shard"

  # SHARD_JOB as the push service names it (RunJob): projects/P/locations/L/jobs/J.
  shard_job_id = var.shard_job_enabled ? "projects/${var.project_id}/locations/${one(google_cloud_run_v2_job.shard[*].location)}/jobs/${one(google_cloud_run_v2_job.shard[*].name)}" : ""

  # How long one execution can run, at worst: every attempt of a task runs
  # to its timeout, and with parallelism 1 the tasks take turns (with 0,
  # Cloud Run starts them all at once, quota permitting).
  shard_task_seconds      = var.shard_task_timeout_seconds * (var.shard_max_retries + 1)
  shard_waves             = var.shard_parallelism == 1 ? var.shard_max_tasks : 1
  dispatch_stale_min      = local.shard_waves * local.shard_task_seconds
  dispatch_stale_margin_s = 1800 # the execution's scheduling, cold starts, Cloud Run's retry delays
  # DISPATCH_STALE_SECONDS: the push service asks Cloud Run whether an
  # execution is over (runtime_views_shard_job below); when it cannot tell,
  # a redelivery before this finds the execution presumed running and starts
  # nothing, and after it, with no manifest, dispatches the input again (at
  # most 3 executions, then a failure report). Too short would start a
  # second execution beside a live one and could end in a failure report
  # while tasks still run; too long only delays the redispatch of an
  # execution that died, in that case.
  dispatch_stale_seconds = coalesce(var.dispatch_stale_seconds, local.dispatch_stale_min + local.dispatch_stale_margin_s)

  # How long _shards/ objects live (storage.tf): their own rule, or the
  # outputs' rule when that one is shorter (it deletes everything but the
  # model registry, _shards/ included).
  shard_records_kept_days = var.output_retention_days > 0 ? min(var.shard_retention_days, var.output_retention_days) : var.shard_retention_days

  # The tasks' environment: the services' common settings (the output
  # bucket, logs, MODEL_URI) without TRAINING_DATA_URI (`scorer shard` never
  # fits) and without the registry's routing (MODEL, MODEL_ROUTES, ...: the
  # push service has chosen the model). Each execution names its model
  # exactly, MODEL_NAME and MODEL_VERSION (RunJob overrides, with the input
  # and its generation), and the tasks read that version from the registry
  # in the output bucket (_models/<name>/<hex>.json) with their objectViewer
  # there (shard_reads_output): whichever model it is, fitted on upload or
  # promoted, MODEL_URI is then not used. It serves only an execution started
  # by hand without MODEL_NAME. CLOUD_RUN_TASK_* come from Cloud Run. The
  # push service also sends its own OUTPUT_BUCKET, LEASE_TTL_SECONDS,
  # SHARD_MAX_RETRIES, CHUNK_MIB, STORAGE_RETRY_SECONDS and output format
  # with each execution, which win over these; the template holds the same
  # values, so the job's own configuration says what its tasks run with.
  shard_env = merge(
    { for name, value in local.common_env : name => value if name != "TRAINING_DATA_URI" },
    {
      # its last attempt (attempt number == SHARD_MAX_RETRIES) writes the
      # input's failure report: the same number as max_retries below
      SHARD_MAX_RETRIES = tostring(var.shard_max_retries)
      LEASE_TTL_SECONDS = tostring(var.lease_ttl_seconds)
    },
    # the same BigQuery table and results topic as the push service's
    # (bigquery.tf, results.tf): the task that commits an input loads and
    # announces it as the push service does for one scored inline
    local.bigquery_env,
    local.results_env,
  )

  # The bucket of MODEL_URI (for executions started without MODEL_NAME),
  # unless the tasks read it already.
  shard_model_buckets = setsubtract(
    toset([for u in [var.model_uri] : regex("^gs://([^/]+)/", u)[0] if u != ""]),
    [local.input_bucket, local.output_bucket],
  )
}

# The tasks' identity: reads the input, reads and creates outputs, nothing else.
resource "google_service_account" "shard" {
  count = local.shard_enabled

  account_id   = local.shard_job_name
  display_name = "scorer shard job tasks"
  description  = "Runs the tasks of the shard job: reads input objects, reads and creates output objects. Nothing else."

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "shard_reads_input" {
  count = local.shard_enabled

  bucket = google_storage_bucket.input.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.shard[0].member
}

# Read and create in the output bucket: no delete, so no overwrite (outputs,
# shard records and manifests are create-only, like the push service's).
# Reading covers the model registry (_models/), where each execution's
# MODEL_NAME and MODEL_VERSION are read; the tasks never write there.
resource "google_storage_bucket_iam_member" "shard_reads_output" {
  count = local.shard_enabled

  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.shard[0].member
}

resource "google_storage_bucket_iam_member" "shard_creates_output" {
  count = local.shard_enabled

  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.shard[0].member
}

resource "google_storage_bucket_iam_member" "shard_reads_model" {
  for_each = var.shard_job_enabled ? local.shard_model_buckets : toset([])

  bucket = each.key
  role   = "roles/storage.objectViewer"
  member = google_service_account.shard[0].member
}

resource "google_cloud_run_v2_job" "shard" {
  count = local.shard_enabled

  name     = local.shard_job_name
  location = var.region

  deletion_protection = var.deletion_protection

  # (labels: the provider's default_labels, like every other resource)

  template {
    # The task count is set by each execution (size / SHARD_BYTES, at most
    # MAX_TASKS); this is only the template's.
    parallelism = var.shard_parallelism

    template {
      service_account       = google_service_account.shard[0].email
      timeout               = "${var.shard_task_timeout_seconds}s"
      max_retries           = var.shard_max_retries
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      containers {
        # The services' image; its entrypoint is the scorer binary, and
        # args replace its default command (serve).
        image = "${local.image_uri}:${var.image_tag}"
        args  = ["shard"]

        resources {
          limits = {
            cpu    = var.shard_cpu
            memory = var.shard_memory
          }
        }

        dynamic "env" {
          for_each = local.shard_env
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  lifecycle {
    # deploy.sh rolls the job's image with the services' (gcloud run jobs
    # update --image); Terraform manages everything else.
    ignore_changes = [
      client,
      client_version,
      template[0].template[0].containers[0].image,
    ]

    precondition {
      condition     = var.image_tag != ""
      error_message = "image_tag is empty: run ./setup.sh (it builds the image and writes terraform/image.auto.tfvars.json), or pass -var image_tag=<a tag in the Artifact Registry repository>."
    }

    precondition {
      condition     = local.dispatch_stale_seconds >= local.dispatch_stale_min
      error_message = "dispatch_stale_seconds (${local.dispatch_stale_seconds}) is shorter than one execution can run (${local.dispatch_stale_min} s: shard_task_timeout_seconds x (shard_max_retries + 1)${var.shard_parallelism == 1 ? " x shard_max_tasks" : ""}): a redelivery would start a second execution beside a live one. Raise it, or leave it null to compute it."
    }

    precondition {
      condition     = local.shard_records_kept_days * 86400 >= 3 * local.dispatch_stale_seconds
      error_message = "_shards/ objects are deleted after ${local.shard_records_kept_days} days (shard_retention_days, or output_retention_days when shorter), but an input may be dispatched 3 times, ${local.dispatch_stale_seconds} s apart: the dispatch records must outlive that. Raise shard_retention_days (and output_retention_days), or lower the task timeout or retries."
    }
  }

  # The tasks may read and write from their first execution on.
  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.shard_reads_input,
    google_storage_bucket_iam_member.shard_reads_output,
    google_storage_bucket_iam_member.shard_creates_output,
    google_storage_bucket_iam_member.shard_reads_model,
    google_bigquery_dataset_iam_member.shard_edits_predictions,
    google_project_iam_member.shard_runs_bigquery_jobs,
    google_pubsub_topic_iam_member.shard_publishes_results,
  ]
}

# --- who may start executions: the push service's account, this job only ----

# RunJob with overrides (the input's environment, the task count) on this job;
# no other job, no project-wide role.
resource "google_cloud_run_v2_job_iam_member" "runtime_runs_shard_job" {
  count = local.shard_enabled

  name     = google_cloud_run_v2_job.shard[0].name
  location = google_cloud_run_v2_job.shard[0].location
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = google_service_account.runtime.member
}

# Reading an execution's state (GetExecution: whether Cloud Run says it is
# over, so an input whose execution died is dispatched again at once rather
# than after DISPATCH_STALE_SECONDS): run.executions.get, on this job's
# executions only (jobsExecutorWithOverrides does not include it).
resource "google_cloud_run_v2_job_iam_member" "runtime_views_shard_job" {
  count = local.shard_enabled

  name     = google_cloud_run_v2_job.shard[0].name
  location = google_cloud_run_v2_job.shard[0].location
  role     = "roles/run.viewer"
  member   = google_service_account.runtime.member
}

# An execution runs as the job's account: starting one acts as that account
# (this one only).
resource "google_service_account_iam_member" "runtime_acts_as_shard" {
  count = local.shard_enabled

  service_account_id = google_service_account.shard[0].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.runtime.member
}
