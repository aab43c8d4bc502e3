# Terraform and provider versions.
#
# State is never committed (see .gitignore). For a team, keep it in a Cloud
# Storage bucket: copy backend.tf.example to backend.tf, set its bucket, and run
# `terraform init -migrate-state` (docs/OPERATIONS.md, "Remote state").
#
# google-beta is used for one resource only (google_project_service_identity,
# the Pub/Sub service agent: google 6.50 does not have it), and time for one
# time_sleep (monitoring.tf: new log-based metrics reach Cloud Monitoring
# minutes after they are created).
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.50"
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.13"
    }
  }
}
