# Docker repository for the scorer image. Images are tagged with the git commit
# they were built from; tags are immutable, so a tag always means one build.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:The image holds code and a public model, no data; Google-managed encryption is enough, and a customer key would need a KMS key ring, which can never be deleted, outside this module's lifecycle.
  location      = var.region
  repository_id = var.artifact_repository_id
  format        = "DOCKER"
  description   = "scorer images, tagged with their git commit"

  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  # Recent images stay (they are the rollback targets); older ones go after 30 days.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.image_keep_count
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}
