# APIs the scorer needs. setup.sh enables serviceusage and cloudresourcemanager
# with gcloud first (Terraform needs them to enable the rest).
locals {
  apis = concat(
    [
      "artifactregistry.googleapis.com",
      "cloudbuild.googleapis.com",
      "iam.googleapis.com",
      "iamcredentials.googleapis.com",
      "logging.googleapis.com",
      "monitoring.googleapis.com",
      "pubsub.googleapis.com",
      "run.googleapis.com",
      "storage.googleapis.com",
    ],
    var.github_repository_id != "" ? ["sts.googleapis.com"] : [],
    var.predict_api_keys_secret != "" ? ["secretmanager.googleapis.com"] : [],
    var.trigger == "eventarc" ? ["eventarc.googleapis.com"] : [],
    var.bigquery_enabled ? ["bigquery.googleapis.com"] : [],
  )
}

resource "google_project_service" "apis" {
  for_each = toset(local.apis)

  project = var.project_id
  service = each.key

  # Other workloads of the project may use these APIs too: destroying the
  # scorer leaves them enabled.
  disable_on_destroy         = false
  disable_dependent_services = false
}
