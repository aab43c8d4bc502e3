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
  description = "Cloud Run service name; also the prefix of the service accounts, topics and subscriptions."
  type        = string
  default     = "scorer"

  validation {
    # service accounts are named "<service_name>-deploy": at most 30 characters
    condition     = can(regex("^[a-z][a-z0-9-]{2,21}[a-z0-9]$", var.service_name))
    error_message = "service_name must be 4-23 lowercase letters, digits or hyphens, starting with a letter."
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
  description = "Input bucket (CSV files land here); empty means \"<project_id>-scorer-input\"."
  type        = string
  default     = ""
}

variable "output_bucket_name" {
  description = "Output bucket (predictions, manifests, errors); empty means \"<project_id>-scorer-output\". Must differ from the input bucket."
  type        = string
  default     = ""
}

variable "output_retention_days" {
  description = "Delete outputs (predictions, errors, manifests, fitted models) this many days after they were written; 0 keeps them."
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

variable "input_retention_days" {
  description = "Delete input files this many days after upload; 0 keeps them."
  type        = number
  default     = 0

  validation {
    condition     = var.input_retention_days >= 0 && floor(var.input_retention_days) == var.input_retention_days
    error_message = "input_retention_days must be a whole number >= 0."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Both buckets keep object versions; a replaced or deleted version is removed for good after this many days."
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
  description = "vCPUs per instance."
  type        = string
  default     = "2"
}

variable "memory" {
  description = "Memory per instance (the engine streams with flat memory: 160-330 MiB measured from 100k to 10M-row files, bench/deadline.sh)."
  type        = string
  default     = "1Gi"
}

variable "container_concurrency" {
  description = "Requests per instance. Online predictions share instances with push jobs; jobs themselves are capped by max_concurrent_jobs."
  type        = number
  default     = 16
}

variable "request_timeout_seconds" {
  description = "Request timeout of the service. A push request lasts as long as its job, so this matches the subscription's 600 s ack deadline."
  type        = number
  default     = 600

  validation {
    condition     = var.request_timeout_seconds >= 10 && var.request_timeout_seconds <= 600
    error_message = "request_timeout_seconds must be 10..600: Pub/Sub redelivers a push not answered within its 600 s ack deadline."
  }
}

variable "min_instances" {
  description = "Minimum instances (0 scales to zero)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Maximum instances."
  type        = number
  default     = 10
}

variable "max_concurrent_jobs" {
  description = "MAX_CONCURRENT_JOBS: jobs one instance runs at once; a push beyond it answers 429 and Pub/Sub retries later."
  type        = number
  default     = 2
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
  description = "Who can reach the service over the network (IAM still decides who may call it). Pub/Sub push works with INGRESS_TRAFFIC_INTERNAL_ONLY too, but then /predict is reachable only from inside the project's VPC."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "deletion_protection" {
  description = "Protect the Cloud Run service from terraform destroy (destroy.sh then fails until it is set to false and applied)."
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

variable "predict_api_keys_secret" {
  description = "Optional Secret Manager secret (name or projects/P/secrets/NAME) whose latest version holds PREDICT_API_KEYS (comma-separated). Empty: /predict is protected by IAM only."
  type        = string
  default     = ""
}

# ---------------------------------------------------------------------------
# Who may call the service
# ---------------------------------------------------------------------------

variable "push_audience" {
  description = "Fixed audience of the push OIDC tokens: set on the subscription, in the service's custom audiences and in its PUSH_AUDIENCE."
  type        = string
  default     = "scorer-push"

  validation {
    condition     = length(var.push_audience) > 0
    error_message = "push_audience must not be empty."
  }
}

variable "predict_invokers" {
  description = "Members allowed to call the online POST /predict API (e.g. \"group:analysts@example.com\"). The push endpoint still accepts only the push service account's token."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.predict_invokers : can(regex("^(user|serviceAccount|group|domain|principal|principalSet):.+", m))])
    error_message = "predict_invokers must be IAM members (user:, serviceAccount:, group:, domain:, principal:, principalSet:); allUsers and allAuthenticatedUsers are not allowed."
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

variable "github_repository" {
  description = "\"owner/name\" of the GitHub repository whose main branch may deploy; empty creates no workload identity pool or deployer account."
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
