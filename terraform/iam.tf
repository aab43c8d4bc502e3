# Service accounts and what they may do. No primitive roles, no public members,
# and the runtime account holds bucket-level object roles only.

# The service itself.
resource "google_service_account" "runtime" {
  account_id   = "${var.service_name}-run"
  display_name = "scorer Cloud Run runtime"
  description  = "Runs the scorer: reads input objects, reads and creates output objects. Nothing else."

  depends_on = [google_project_service.apis]
}

# Pub/Sub signs its push requests as this account.
resource "google_service_account" "push" {
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

# --- runtime: the bucket of MODEL_URI / TRAINING_DATA_URI, if any -----------

resource "google_storage_bucket_iam_member" "runtime_reads_model" {
  for_each = local.model_buckets

  bucket = each.key
  role   = "roles/storage.objectViewer"
  member = google_service_account.runtime.member
}

# --- runtime: the optional PREDICT_API_KEYS secret ---------------------------

resource "google_secret_manager_secret_iam_member" "runtime_reads_api_keys" {
  count = var.predict_api_keys_secret != "" ? 1 : 0

  secret_id = var.predict_api_keys_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member

  depends_on = [google_project_service.apis]
}

# --- invokers -----------------------------------------------------------------

# Pub/Sub pushes as the push account.
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  name     = google_cloud_run_v2_service.scorer.name
  location = google_cloud_run_v2_service.scorer.location
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}

# Callers of the online /predict API (none by default). They cannot submit
# work: POST / checks that the token belongs to the push account.
resource "google_cloud_run_v2_service_iam_member" "predict_invokers" {
  for_each = toset(var.predict_invokers)

  name     = google_cloud_run_v2_service.scorer.name
  location = google_cloud_run_v2_service.scorer.location
  role     = "roles/run.invoker"
  member   = each.key
}

# The Pub/Sub service agent mints the push tokens for the push account (needed
# in projects whose Pub/Sub predates April 2021, harmless elsewhere).
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Operators run `scorer redrive` / `scorer reconcile` with their own identity:
# they need roles/pubsub.subscriber on the dead-letter subscription,
# roles/pubsub.publisher on the input topic, and objectViewer on both buckets.
# Those rights are deliberately not given to the runtime account.
