# Cloud Build runs `gcloud builds submit` (setup.sh, deploy.sh) as a dedicated
# account, so no operator needs Docker and builds do not depend on the
# project's default build account (whose roles vary between projects).

resource "google_service_account" "builder" {
  account_id   = "${var.service_name}-build"
  display_name = "scorer image builder"
  description  = "Cloud Build identity: reads the uploaded source, pushes the scorer image, writes build logs."

  depends_on = [google_project_service.apis]
}

# Source archives uploaded by gcloud builds submit.
resource "google_storage_bucket" "build_staging" {
  #checkov:skip=CKV_GCP_62:Holds transient build sources only; access is audited with Cloud Audit Logs.
  #checkov:skip=CKV_GCP_78:Transient build sources (deleted after 7 days); versions would only keep them longer.
  name          = local.build_bucket
  location      = upper(var.region)
  storage_class = "STANDARD"
  force_destroy = true

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "builder_reads_sources" {
  bucket = google_storage_bucket.build_staging.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.builder.member
}

resource "google_artifact_registry_repository_iam_member" "builder_pushes_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.builder.member
}

# Build logs go to Cloud Logging (cloudbuild.yaml: logging CLOUD_LOGGING_ONLY).
resource "google_project_iam_member" "builder_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.builder.member
}
