provider "google" {
  project = var.project_id
  region  = var.region

  # Every resource that takes labels carries these (plus var.labels), so the
  # scorer's resources can be found and costed together.
  default_labels = merge(
    {
      app        = "scorer"
      managed-by = "terraform"
    },
    var.labels,
  )
}

data "google_project" "this" {
  project_id = var.project_id
}

# The Cloud Storage service agent publishes the bucket notifications.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [google_project_service.apis]
}
