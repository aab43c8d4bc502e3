locals {
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

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = local.default_labels
}

# Only for google_project_service_identity (iam.tf).
provider "google-beta" {
  project        = var.project_id
  region         = var.region
  default_labels = local.default_labels
}

# The Cloud Storage service agent publishes the bucket notifications.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [google_project_service.apis]
}
