# Service accounts and what they may do. No primitive roles, no public members,
# and the runtime account holds bucket-level object roles only.

# The push service (scores the input files).
resource "google_service_account" "runtime" {
  account_id   = "${var.service_name}-run"
  display_name = "scorer Cloud Run runtime (push)"
  description  = "Runs the push service: reads input objects, reads and creates output objects, overwrites model aliases (_models/). Nothing else."

  depends_on = [google_project_service.apis]
}

# The predict service (online POST /predict): reads the model and the model
# registry, nothing else.
resource "google_service_account" "predict" {
  account_id   = "${var.service_name}-predict"
  display_name = "scorer Cloud Run runtime (predict)"
  description  = "Runs the predict service: reads the model (MODEL_URI / TRAINING_DATA_URI) and the model registry (_models/), stores its start-up model there. No input or output data."

  depends_on = [google_project_service.apis]
}

# Pub/Sub's service agent signs the pushes and moves dead letters. Some
# projects create it only on first use: this makes sure it exists before the
# grants below name it (google 6.50 has no such resource; google-beta has).
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.apis]
}

# Pub/Sub signs its push requests as this account (trigger = "pubsub"; with
# "eventarc", the trigger's own account in eventarc.tf).
resource "google_service_account" "push" {
  count = local.pubsub_enabled

  account_id   = "${var.service_name}-push"
  display_name = "scorer Pub/Sub push identity"
  description  = "Identity of the OIDC tokens on Pub/Sub pushes to the scorer; may invoke the service."

  depends_on = [google_project_service.apis]
}

# --- runtime: input bucket, read only --------------------------------------

resource "google_storage_bucket_iam_member" "runtime_reads_input" {
  bucket = google_storage_bucket.input.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.runtime.member
}

# --- runtime: output bucket, read and create (no delete, so no overwrite) ---

resource "google_storage_bucket_iam_member" "runtime_reads_output" {
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.runtime.member
}

resource "google_storage_bucket_iam_member" "runtime_creates_output" {
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.runtime.member
}

# --- runtime: the model registry, _models/ in the output bucket -------------

# A fit on upload moves @staging (and @production with promote = "auto") by
# overwriting the alias object with a generation precondition: replacing an
# object takes storage.objects.delete as well as create, so objectUser (get,
# create, delete, no IAM) on _models/ only. Everywhere else the account stays
# create-only. (List needs the bucket, not an object: runtime_reads_output.)
resource "google_storage_bucket_iam_member" "runtime_writes_models" {
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectUser"
  member = google_service_account.runtime.member

  condition {
    title       = "model registry only"
    description = "The push service may replace (and so delete) objects under _models/ only: the registry's aliases."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${local.output_bucket}/objects/_models/\")"
  }
}

# --- runtime: the bucket of MODEL_URI / TRAINING_DATA_URI, if any -----------

resource "google_storage_bucket_iam_member" "runtime_reads_model" {
  for_each = local.model_buckets

  bucket = each.key
  role   = "roles/storage.objectViewer"
  member = google_service_account.runtime.member
}

# --- predict: the model, and the optional PREDICT_API_KEYS secret ------------

resource "google_storage_bucket_iam_member" "predict_reads_model" {
  for_each = local.model_uri_buckets

  bucket = each.key
  role   = "roles/storage.objectViewer"
  member = google_service_account.predict.member
}

# The registry in OUTPUT_BUCKET/_models/, and nothing else of the output
# bucket: the predict service reads the aliases it serves (again every
# MODEL_REFRESH_SECONDS) and the versions they name ...
resource "google_storage_bucket_iam_member" "predict_reads_models" {
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.predict.member

  condition {
    title       = "model registry only"
    description = "The predict service may read objects under _models/ only."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${local.output_bucket}/objects/_models/\")"
  }
}

# ... and at start stores its start-up model there as a version and creates
# @production if there is none (create-only: it never replaces an alias).
resource "google_storage_bucket_iam_member" "predict_creates_models" {
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.predict.member

  condition {
    title       = "model registry only"
    description = "The predict service may create objects under _models/ only."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${local.output_bucket}/objects/_models/\")"
  }
}

resource "google_secret_manager_secret_iam_member" "predict_reads_api_keys" {
  count = var.predict_api_keys_secret != "" ? 1 : 0

  secret_id = var.predict_api_keys_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.predict.member

  depends_on = [google_project_service.apis]
}

# --- invokers -----------------------------------------------------------------

# Only Pub/Sub (as the push account) may invoke the push service (with
# trigger = "eventarc": only the trigger's account, eventarc.tf).
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  count = local.pubsub_enabled

  name     = google_cloud_run_v2_service.services["push"].name
  location = google_cloud_run_v2_service.services["push"].location
  role     = "roles/run.invoker"
  member   = google_service_account.push[0].member
}

# Callers of the online /predict API (none by default) invoke the predict
# service only; they cannot submit work to the push service.
resource "google_cloud_run_v2_service_iam_member" "predict_invokers" {
  for_each = toset(var.predict_invokers)

  name     = google_cloud_run_v2_service.services["predict"].name
  location = google_cloud_run_v2_service.services["predict"].location
  role     = "roles/run.invoker"
  member   = each.key
}

# The Pub/Sub service agent mints the push tokens for the push account (needed
# in projects whose Pub/Sub predates April 2021, harmless elsewhere).
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  count = local.pubsub_enabled

  service_account_id = google_service_account.push[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Operators run `scorer redrive` / `scorer reconcile` with their own identity:
# they need roles/pubsub.subscriber on the dead-letter subscription,
# roles/pubsub.publisher on the input topic, and objectViewer on both buckets.
# Those rights are deliberately not given to the runtime account. `scorer
# model promote|rollback` needs objectUser on the output bucket's _models/
# (like runtime_writes_models) and objectViewer on the bucket (listing).
