# Terraform and provider versions.
#
# State is never committed (see .gitignore). For a team, keep it in a Cloud
# Storage bucket: copy backend.tf.example to backend.tf, set its bucket, and run
# `terraform init -migrate-state` (README.md, "Remote state").
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
  }
}
