# ---------------------------------------------------------------------------
# Project and naming
# ---------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that holds everything."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lowercase letters, digits and hyphens), not its name or number."
  }
}

variable "region" {
  description = "Region of the Cloud Run service, the Artifact Registry repository and the builds."
  type        = string
  default     = "europe-west1"
}

variable "bucket_location" {
  description = "Location of the buckets; empty means the region."
  type        = string
  default     = ""
}

variable "service_name" {
  description = "Name of the push Cloud Run service; also the prefix of the predict service (<service_name>-predict), the service accounts, topics, subscriptions and default bucket names."
  type        = string
  default     = "scorer"

  validation {
    # service accounts are named "<service_name>-predict": at most 30 characters
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}[a-z0-9]$", var.service_name))
    error_message = "service_name must be 4-22 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Extra labels for every resource that takes labels."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------

variable "input_bucket_name" {
  description = "Input bucket (CSV files land here); empty means \"<project_id>-<service_name>-input\"."
  type        = string
  default     = ""
}

variable "output_bucket_name" {
  description = "Output bucket (predictions, manifests, errors); empty means \"<project_id>-<service_name>-output\". Must differ from the input bucket."
  type        = string
  default     = ""
}

variable "output_retention_days" {
  description = "Delete outputs (predictions, errors, manifests, curves) this many days after they were written; 0 keeps them. Never the model registry (_models/ in the output bucket: storage.tf)."
  type        = number
  default     = 90

  validation {
    condition     = var.output_retention_days >= 0 && floor(var.output_retention_days) == var.output_retention_days
    error_message = "output_retention_days must be a whole number >= 0."
  }
}

variable "lease_retention_days" {
  description = "Delete the service's coordination objects (_leases/ in the output bucket) after this many days."
  type        = number
  default     = 7

  validation {
    condition     = var.lease_retention_days >= 1 && floor(var.lease_retention_days) == var.lease_retention_days
    error_message = "lease_retention_days must be a whole number >= 1 (a lease must outlive the job that holds it)."
  }
}

variable "shard_retention_days" {
  description = "Delete the shard job's working objects (_shards/ in the output bucket: dispatch and shard records, per-task rejects) after this many days. They must outlive every execution that may still need them: at least 3 dispatches of dispatch_stale_seconds (checked at plan)."
  type        = number
  default     = 7

  validation {
    condition     = var.shard_retention_days >= 1 && floor(var.shard_retention_days) == var.shard_retention_days
    error_message = "shard_retention_days must be a whole number >= 1."
  }
}

variable "input_retention_days" {
  description = "Delete input files this many days after upload; 0 keeps them."
  type        = number
  default     = 0

  validation {
    condition     = var.input_retention_days >= 0 && floor(var.input_retention_days) == var.input_retention_days
    error_message = "input_retention_days must be a whole number >= 0."
  }
}

variable "input_versioning" {
  description = "Keep replaced or deleted input files as noncurrent versions (for noncurrent_version_retention_days). Off by default: outputs are keyed by the input's generation already, and a versioned, soft-deleting input bucket stores a re-uploaded file up to three times."
  type        = bool
  default     = false
}

variable "input_soft_delete_days" {
  description = "Soft delete of the input bucket: a deleted or replaced input stays restorable this many days (7-90), billed as stored. 0 (the default) turns soft delete off."
  type        = number
  default     = 0

  validation {
    condition     = var.input_soft_delete_days == 0 || (var.input_soft_delete_days >= 7 && var.input_soft_delete_days <= 90 && floor(var.input_soft_delete_days) == var.input_soft_delete_days)
    error_message = "input_soft_delete_days must be 0 (off) or a whole number of days from 7 to 90 (Cloud Storage's limits)."
  }
}

variable "model_history_days" {
  description = "The output bucket keeps object versions: the model registry's (_models/: every earlier generation of an alias, a deleted version) are removed for good this many days after they were replaced; 0 keeps them for ever. Every other noncurrent version of the output bucket goes after a day."
  type        = number
  default     = 365

  validation {
    condition     = var.model_history_days >= 0 && floor(var.model_history_days) == var.model_history_days
    error_message = "model_history_days must be a whole number >= 0 (0: for ever)."
  }
}

variable "noncurrent_version_retention_days" {
  description = "With input_versioning, a replaced or deleted input is removed for good after this many days. (The output bucket's versions: model_history_days.)"
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be >= 1."
  }
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete non-empty buckets. destroy.sh empties them itself, so this stays false."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------
# Image
# ---------------------------------------------------------------------------

variable "artifact_repository_id" {
  description = "Artifact Registry (Docker) repository for the image."
  type        = string
  default     = "scorer"
}

variable "image_name" {
  description = "Image name inside the repository."
  type        = string
  default     = "scorer"
}

variable "image_tag" {
  description = "Tag of the image the service is created with (setup.sh builds it and writes image.auto.tfvars.json). Later images are rolled out by deploy.sh, which Terraform leaves alone."
  type        = string
  default     = ""
}

variable "image_keep_count" {
  description = "Artifact Registry cleanup keeps at least this many most recent images (rollback targets); older ones are deleted after 30 days."
  type        = number
  default     = 20
}

# ---------------------------------------------------------------------------
# Cloud Run service
# ---------------------------------------------------------------------------

variable "cpu" {
  description = "vCPUs per push-service instance."
  type        = string
  default     = "2"
}

variable "memory" {
  description = "Memory per push-service instance (the engine streams with flat memory: 160-330 MiB measured from 100k to 10M-row files, bench/deadline.sh)."
  type        = string
  default     = "1Gi"
}

variable "request_timeout_seconds" {
  description = "Request timeout of the push service, and the push subscription's ack deadline (one value, so they always agree): a push request lasts as long as its job."
  type        = number
  default     = 600

  validation {
    condition     = var.request_timeout_seconds >= 10 && var.request_timeout_seconds <= 600
    error_message = "request_timeout_seconds must be 10..600: Pub/Sub redelivers a push not answered within its 600 s ack deadline."
  }
}

variable "min_instances" {
  description = "Minimum instances of the push service (0 scales to zero)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Maximum instances of the push service: at most max_instances x max_concurrent_jobs files are scored at once."
  type        = number
  default     = 10
}

variable "max_concurrent_jobs" {
  description = "Job slots of one push-service instance. The same number is the service's request concurrency (max_instance_request_concurrency) and its MAX_CONCURRENT_JOBS, so Cloud Run queues extra pushes and adds instances instead of the app refusing them with 429."
  type        = number
  default     = 2

  validation {
    condition     = var.max_concurrent_jobs >= 1 && var.max_concurrent_jobs <= 1000 && floor(var.max_concurrent_jobs) == var.max_concurrent_jobs
    error_message = "max_concurrent_jobs must be a whole number from 1 to 1000 (Cloud Run's request concurrency limit)."
  }
}

variable "inline_max_bytes" {
  description = "INLINE_MAX_BYTES: largest input (bytes) scored inside its push request; a larger one gets a committed failure report naming the limit (answered 2xx, never retried). null leaves the binary's default, which is sized for the 600 s request timeout; lower it with request_timeout_seconds (docs/DEPLOY.md, \"Size admission\")."
  type        = number
  default     = null

  validation {
    condition     = var.inline_max_bytes == null ? true : var.inline_max_bytes >= 1 && floor(var.inline_max_bytes) == var.inline_max_bytes
    error_message = "inline_max_bytes must be null (the binary's default) or a whole number of bytes >= 1."
  }
}

variable "lease_ttl_seconds" {
  description = "LEASE_TTL_SECONDS: how long a job's lease lasts without renewal before another instance may take the job over."
  type        = number
  default     = 120
}

variable "log_level" {
  description = "RUST_LOG of the service."
  type        = string
  default     = "info"
}

variable "ingress" {
  description = "Who can reach the push service over the network (IAM still decides who may call it). Pub/Sub push works with INGRESS_TRAFFIC_INTERNAL_ONLY too."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "deletion_protection" {
  description = "Protect both Cloud Run services, the shard job and the BigQuery predictions table from terraform destroy (destroy.sh then fails until it is set to false and applied)."
  type        = bool
  default     = false
}

variable "model_uri" {
  description = "MODEL_URI: a model artifact (gs://bucket/path.json) to serve instead of the embedded default; empty keeps the default."
  type        = string
  default     = ""

  validation {
    condition     = var.model_uri == "" || can(regex("^gs://[a-z0-9][a-z0-9._-]{1,220}/.+", var.model_uri))
    error_message = "model_uri must be empty or gs://BUCKET/OBJECT."
  }
}

variable "training_data_uri" {
  description = "TRAINING_DATA_URI: training CSV (gs://bucket/path.csv) to fit a model from at start instead; empty keeps the embedded model."
  type        = string
  default     = ""

  validation {
    condition     = var.training_data_uri == "" || can(regex("^gs://[a-z0-9][a-z0-9._-]{1,220}/.+", var.training_data_uri))
    error_message = "training_data_uri must be empty or gs://BUCKET/OBJECT."
  }
}

# The model registry, _models/ in the output bucket
# (docs/DEPLOY.md, "Model registry"). A model reference is `name` (its
# @production), `name@alias` or `name:version` (sha256:<16 hex digits>).

variable "default_model" {
  description = "MODEL: the model of inputs (and /predict requests) that name none: `name`, `name@alias` or `name:version`. Empty: the start-up model's name @production."
  type        = string
  default     = ""

  validation {
    condition     = var.default_model == "" || can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(@[A-Za-z0-9][A-Za-z0-9._-]{0,99}|:(sha256:)?[0-9a-f]{16})?$", var.default_model))
    error_message = "default_model must be empty, name, name@alias or name:version (names and aliases: letters, digits, '.', '_', '-'; a version: 16 lower-case hex digits)."
  }
}

variable "model_routes" {
  description = "MODEL_ROUTES: the model of inputs by name prefix, { \"flights/\" = \"scl-flight-delay@production\" }; the longest matching prefix wins, and an input's own metadata `model` (x-goog-meta-model) comes first. Empty: none."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for prefix, ref in var.model_routes :
      prefix != "" && trimspace(prefix) == prefix && !can(regex("[,=]", prefix)) &&
      can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(@[A-Za-z0-9][A-Za-z0-9._-]{0,99}|:(sha256:)?[0-9a-f]{16})?$", ref))
    ])
    error_message = "model_routes maps a non-empty prefix (no ',', '=' or surrounding spaces) to name, name@alias or name:version."
  }
}

variable "model_refresh_seconds" {
  description = "MODEL_REFRESH_SECONDS: how long an alias's version is used before it is read again: both services follow a promote or rollback within this time."
  type        = number
  default     = 30

  validation {
    condition     = var.model_refresh_seconds >= 1 && floor(var.model_refresh_seconds) == var.model_refresh_seconds
    error_message = "model_refresh_seconds must be a whole number >= 1."
  }
}

variable "training_prefix" {
  description = "TRAINING_PREFIX: input files under this prefix (e.g. \"training/\") are fitted, not scored: the push service stores the new version in the registry and moves aliases as `promote` says. Empty: no fit on upload."
  type        = string
  default     = ""

  validation {
    condition     = var.training_prefix == "" || can(regex("^[^_/\\s]", var.training_prefix))
    error_message = "training_prefix must be empty or a prefix such as \"training/\" (not starting with '_', the service's own namespace, '/' or a space)."
  }
}

variable "promote" {
  description = "PROMOTE (with training_prefix): what a fit on upload promotes: \"staging\" (its version becomes @staging) or \"auto\" (also @production, when its held-out ROC AUC is at least the current @production's on the same rows)."
  type        = string
  default     = "staging"

  validation {
    condition     = contains(["staging", "auto"], var.promote)
    error_message = "promote must be \"staging\" or \"auto\"."
  }
}

variable "predict_api_keys_secret" {
  description = "Optional Secret Manager secret (name or projects/P/secrets/NAME) whose latest version holds PREDICT_API_KEYS (comma-separated). Empty: /predict is protected by IAM only."
  type        = string
  default     = ""
}

# ---------------------------------------------------------------------------
# The predict service (POST /predict): same image, its own scaling
# ---------------------------------------------------------------------------

variable "predict_concurrency" {
  description = "Requests per instance of the predict service (short CPU-bound requests: many at once)."
  type        = number
  default     = 80

  validation {
    condition     = var.predict_concurrency >= 1 && var.predict_concurrency <= 1000
    error_message = "predict_concurrency must be 1..1000."
  }
}

variable "predict_cpu" {
  description = "vCPUs per predict-service instance."
  type        = string
  default     = "1"
}

variable "predict_memory" {
  description = "Memory per predict-service instance."
  type        = string
  default     = "512Mi"
}

variable "predict_min_instances" {
  description = "Minimum instances of the predict service (1 or more avoids cold starts for online callers)."
  type        = number
  default     = 0
}

variable "predict_max_instances" {
  description = "Maximum instances of the predict service."
  type        = number
  default     = 10
}

variable "predict_request_timeout_seconds" {
  description = "Request timeout of the predict service."
  type        = number
  default     = 30

  validation {
    condition     = var.predict_request_timeout_seconds >= 1 && var.predict_request_timeout_seconds <= 3600
    error_message = "predict_request_timeout_seconds must be 1..3600."
  }
}

variable "predict_ingress" {
  description = "Who can reach the predict service over the network (IAM still decides who may call it)."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.predict_ingress)
    error_message = "predict_ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

# ---------------------------------------------------------------------------
# Large inputs: the shard job (Cloud Run job running `scorer shard`)
# ---------------------------------------------------------------------------

variable "shard_job_enabled" {
  description = "Create the Cloud Run job that scores inputs over INLINE_MAX_BYTES in parallel tasks, and point the push service at it (SHARD_JOB). false: no job, and such inputs get a committed failure report naming the limit."
  type        = bool
  default     = true
}

variable "shard_bytes" {
  description = "SHARD_BYTES: bytes of input per task; an input gets size / shard_bytes tasks (rounded up, at most shard_max_tasks)."
  type        = number
  default     = 1073741824

  validation {
    condition     = var.shard_bytes >= 1048576 && floor(var.shard_bytes) == var.shard_bytes
    error_message = "shard_bytes must be a whole number of bytes, at least 1 MiB (1048576)."
  }
}

variable "shard_max_tasks" {
  description = "MAX_TASKS: most tasks in one execution; a larger input gets larger ranges per task (Cloud Run allows 10,000)."
  type        = number
  default     = 100

  validation {
    condition     = var.shard_max_tasks >= 1 && var.shard_max_tasks <= 10000 && floor(var.shard_max_tasks) == var.shard_max_tasks
    error_message = "shard_max_tasks must be a whole number from 1 to 10000 (Cloud Run's limit of tasks per execution)."
  }
}

variable "shard_max_retries" {
  description = "Retries of a failed task: the job's max_retries and SHARD_MAX_RETRIES of the push service and of the tasks (one value, so they agree: a task's last attempt writes the input's failure report)."
  type        = number
  default     = 3

  validation {
    condition     = var.shard_max_retries >= 0 && var.shard_max_retries <= 10 && floor(var.shard_max_retries) == var.shard_max_retries
    error_message = "shard_max_retries must be a whole number from 0 to 10 (Cloud Run's limits)."
  }
}

variable "shard_task_timeout_seconds" {
  description = "Time limit of one task attempt (one byte range of shard_bytes, or more when shard_max_tasks caps the task count)."
  type        = number
  default     = 3600

  validation {
    condition     = var.shard_task_timeout_seconds >= 60 && var.shard_task_timeout_seconds <= 604800 && floor(var.shard_task_timeout_seconds) == var.shard_task_timeout_seconds
    error_message = "shard_task_timeout_seconds must be a whole number from 60 to 604800 (168 hours, Cloud Run's limit)."
  }
}

variable "shard_parallelism" {
  description = "The job's parallelism: 0 runs as many tasks at once as Cloud Run's quota allows; 1 runs them one after another. Nothing above 1: an execution's task count is set per input, down to 1 (an input that cannot be cut into ranges), and Cloud Run refuses executions whose task count is below the job's parallelism."
  type        = number
  default     = 0

  validation {
    condition     = var.shard_parallelism == 0 || var.shard_parallelism == 1
    error_message = "shard_parallelism must be 0 (as many at once as the quota allows) or 1: an execution can have a single task, and Cloud Run refuses a task count below the job's parallelism."
  }
}

variable "shard_cpu" {
  description = "vCPUs of each task of the shard job."
  type        = string
  default     = "2"
}

variable "shard_memory" {
  description = "Memory of each task of the shard job (a task streams its range: memory does not grow with the range's size)."
  type        = string
  default     = "1Gi"
}

variable "dispatch_stale_seconds" {
  description = "DISPATCH_STALE_SECONDS: how long the push service presumes a started execution still running (a delivery after that, with no manifest, dispatches the input again). null computes it from the task timeout, the retries and the parallelism (cloud_run_job.tf: local.dispatch_stale_seconds); a value set here may not be smaller than that."
  type        = number
  default     = null

  validation {
    condition     = var.dispatch_stale_seconds == null ? true : var.dispatch_stale_seconds >= 1 && floor(var.dispatch_stale_seconds) == var.dispatch_stale_seconds
    error_message = "dispatch_stale_seconds must be null (computed) or a whole number of seconds."
  }
}

# ---------------------------------------------------------------------------
# Who may call the services
# ---------------------------------------------------------------------------

variable "push_audience" {
  description = "Fixed audience of the push OIDC tokens (trigger = \"pubsub\"): set on the subscription, in the push service's custom audiences and in its PUSH_AUDIENCE. Eventarc's tokens carry the service URL instead (eventarc_push_audience)."
  type        = string
  default     = "scorer-push"

  validation {
    condition     = length(var.push_audience) > 0
    error_message = "push_audience must not be empty."
  }
}

variable "predict_invokers" {
  description = "Members allowed to invoke the predict service (POST /predict), e.g. \"group:analysts@example.com\". Only the push service account may invoke the push service."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.predict_invokers : can(regex("^(user|serviceAccount|group|domain|principal|principalSet):.+", m))])
    error_message = "predict_invokers must be IAM members (user:, serviceAccount:, group:, domain:, principal:, principalSet:); allUsers and allAuthenticatedUsers are not allowed."
  }
}

# ---------------------------------------------------------------------------
# What announces new input files to the push service
# ---------------------------------------------------------------------------

variable "trigger" {
  description = "How new input files reach the push service (POST /): \"pubsub\", a bucket notification to a topic and a push subscription built here (dead-letter topic, retry policy, fixed audience, ack deadline = request timeout); or \"eventarc\", an Eventarc trigger on the bucket's finalized objects, whose subscription Eventarc manages (docs/DEPLOY.md, \"Pub/Sub or Eventarc\")."
  type        = string
  default     = "pubsub"

  validation {
    condition     = contains(["pubsub", "eventarc"], var.trigger)
    error_message = "trigger must be \"pubsub\" or \"eventarc\"."
  }
}

variable "eventarc_push_audience" {
  description = "With trigger = \"eventarc\": the audience of Eventarc's tokens, which is the push service's URL (terraform output push_service_url). The service cannot be given its own URL in the apply that creates it, so setup.sh writes it to eventarc.auto.tfvars.json once the service exists and applies again; without setup.sh, set it yourself and apply again. Empty: not known yet (pushes are refused with 401 and retried until it is set)."
  type        = string
  default     = ""

  validation {
    condition     = var.eventarc_push_audience == "" || can(regex("^https://[a-z0-9.-]+$", var.eventarc_push_audience))
    error_message = "eventarc_push_audience must be empty or the service URL, https://HOST without a path or trailing slash."
  }
}

# ---------------------------------------------------------------------------
# Pub/Sub delivery
# ---------------------------------------------------------------------------

variable "max_delivery_attempts" {
  description = "Deliveries of one notification before it is dead-lettered (5..100). See the comment on the push subscription for how the default was chosen."
  type        = number
  default     = 50

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be 5..100 (Pub/Sub's limits)."
  }
}

variable "retry_minimum_backoff_seconds" {
  description = "First redelivery delay after a 429/5xx; it doubles on each failure up to the maximum."
  type        = number
  default     = 10
}

variable "retry_maximum_backoff_seconds" {
  description = "Longest redelivery delay (at most 600)."
  type        = number
  default     = 600

  validation {
    condition     = var.retry_maximum_backoff_seconds <= 600
    error_message = "retry_maximum_backoff_seconds must be at most 600 (Pub/Sub's limit)."
  }
}

# ---------------------------------------------------------------------------
# SLOs and alerts
# ---------------------------------------------------------------------------

variable "availability_slo_goal" {
  description = "Share of push requests answered 2xx (among 2xx + 5xx) over 28 days."
  type        = number
  default     = 0.995
}

variable "predict_availability_slo_goal" {
  description = "Share of predict-service requests answered 2xx (among 2xx + 5xx) over 28 days."
  type        = number
  default     = 0.999
}

variable "predict_latency_slo_goal" {
  description = "Share of predict-service requests answered within predict_latency_threshold_ms over 28 days."
  type        = number
  default     = 0.99
}

variable "predict_latency_threshold_ms" {
  description = "Latency threshold of the predict SLO (ms, Cloud Run's request_latencies)."
  type        = number
  default     = 300
}

variable "slo_alert_min_events" {
  description = "A burn-rate alert fires only when its long window holds at least this many events (requests, or scored files for the file-latency SLO): a trickle of traffic, or one slow file, cannot page."
  type        = number
  default     = 30

  validation {
    condition     = var.slo_alert_min_events >= 1
    error_message = "slo_alert_min_events must be >= 1."
  }
}

variable "log_metric_propagation_seconds" {
  description = "Pause between creating the log-based metrics and creating the SLOs and alerts that read them (Cloud Monitoring answers 404 for a new log-based metric for minutes). Only on the apply that creates the metrics; setup.sh also retries that 404 with a bounded backoff."
  type        = number
  default     = 180
}

variable "latency_slo_goal" {
  description = "Share of scored files whose job finished within file_latency_budget_ms over 28 days."
  type        = number
  default     = 0.99
}

variable "file_latency_budget_ms" {
  description = "Time budget of one file, from the push's arrival to its manifest (ms). One of the job-duration histogram's bucket bounds, so the SLI is exact."
  type        = number
  default     = 300000

  validation {
    condition     = contains([10000, 30000, 60000, 120000, 300000, 600000], var.file_latency_budget_ms)
    error_message = "file_latency_budget_ms must be one of 10000, 30000, 60000, 120000, 300000, 600000 (bucket bounds of the job-duration metric)."
  }
}

variable "alert_email" {
  description = "E-mail address for alert notifications; empty creates no e-mail channel."
  type        = string
  default     = ""
}

variable "notification_channels" {
  description = "Existing notification channel IDs (projects/P/notificationChannels/N) for the alerts."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------
# Continuous deployment (GitHub Actions through Workload Identity Federation)
# ---------------------------------------------------------------------------

variable "github_repository_id" {
  description = "Numeric ID of the GitHub repository whose main branch may deploy (gh api repos/OWNER/NAME --jq .id). The trust is keyed on this ID, which a renamed, transferred or re-created repository does not carry over. Empty creates no workload identity pool or deployer account."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([0-9]+)?$", var.github_repository_id))
    error_message = "github_repository_id must be empty or the repository's numeric ID (gh api repos/OWNER/NAME --jq .id), not its name."
  }
}

variable "github_repository" {
  description = "\"owner/name\" of that repository: only a label in descriptions (the trust is keyed on github_repository_id)."
  type        = string
  default     = ""

  validation {
    condition     = var.github_repository == "" || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be empty or \"owner/name\"."
  }
}

variable "tf_state_bucket" {
  description = "Bucket of the remote Terraform state; the deployer may read it (deploy.sh reads terraform output). Empty: no grant."
  type        = string
  default     = ""
}

# ---------------------------------------------------------------------------
# Predictions in BigQuery, and a results topic (off by default)
# ---------------------------------------------------------------------------

variable "bigquery_enabled" {
  description = "Create a BigQuery dataset (in the buckets' location) and a predictions table, let the push service's and the shard job's accounts append to it with load jobs (roles/bigquery.dataEditor on that dataset, roles/bigquery.jobUser on the project), and give both BIGQUERY_TABLE (project.dataset.table) and BIGQUERY_LOCATION (bigquery.tf)."
  type        = bool
  default     = false
}

variable "bigquery_dataset_id" {
  description = "Dataset of the predictions table (bigquery_enabled); empty means the service name with '-' replaced by '_' (\"scorer\")."
  type        = string
  default     = ""

  validation {
    condition     = length(var.bigquery_dataset_id) <= 1024 && can(regex("^[A-Za-z0-9_]*$", var.bigquery_dataset_id))
    error_message = "bigquery_dataset_id must be empty or at most 1024 letters, digits and underscores."
  }
}

variable "bigquery_table_id" {
  description = "Name of the predictions table in that dataset (bigquery_enabled)."
  type        = string
  default     = "predictions"

  validation {
    # no '.': BIGQUERY_TABLE is project.dataset.table
    condition     = length(var.bigquery_table_id) <= 1024 && can(regex("^[A-Za-z0-9_][A-Za-z0-9_-]*$", var.bigquery_table_id))
    error_message = "bigquery_table_id must be 1-1024 letters, digits, underscores and hyphens, not starting with a hyphen."
  }
}

variable "bigquery_input_columns" {
  description = "The predictions table's input columns (bigquery_enabled), in the order of the files scored, each a NULLABLE STRING named exactly as in their header; probability, prediction and the provenance columns follow. They must match the files scored: a Parquet load matches columns by name, and a column the table lacks fails the load. The default is the raw 18-column SCL layout (data/README.md); the shipped data/scl_flights_2017.csv has 5: [\"split\", \"OPERA\", \"TIPOVUELO\", \"MES\", \"atraso_15\"]. Changing the list later changes the existing table's schema: read the plan, since a change the provider cannot make in place replaces the table and its rows (deletion_protection refuses that)."
  type        = list(string)
  default = [
    "Fecha-I", "Vlo-I", "Ori-I", "Des-I", "Emp-I",
    "Fecha-O", "Vlo-O", "Ori-O", "Des-O", "Emp-O",
    "DIA", "MES", "AÑO", "DIANOM", "TIPOVUELO", "OPERA", "SIGLAORI", "SIGLADES",
  ]

  validation {
    condition     = length(var.bigquery_input_columns) > 0 && alltrue([for c in var.bigquery_input_columns : trimspace(c) != ""])
    error_message = "bigquery_input_columns must name at least one column, and no name may be empty."
  }

  validation {
    # BigQuery's column names are case-insensitive.
    condition     = length(distinct([for c in var.bigquery_input_columns : lower(c)])) == length(var.bigquery_input_columns)
    error_message = "bigquery_input_columns must be unique (BigQuery compares column names without regard to case)."
  }

  validation {
    condition = length(setintersection(
      [for c in var.bigquery_input_columns : lower(c)],
      ["probability", "prediction", "source_uri", "source_generation", "row_number", "model_version", "scored_at"],
    )) == 0
    error_message = "bigquery_input_columns must not name probability, prediction, source_uri, source_generation, row_number, model_version or scored_at: the scorer appends those columns after the input's."
  }
}

variable "results_topic_enabled" {
  description = "Create a Pub/Sub topic <service_name>-results with an example pull subscription (<service_name>-results-example), let the push service's and the shard job's accounts publish to it (roles/pubsub.publisher on that topic), and give both RESULTS_TOPIC (projects/P/topics/T) (results.tf)."
  type        = bool
  default     = false
}
