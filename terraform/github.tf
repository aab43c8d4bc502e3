# Continuous deployment from GitHub Actions without long-lived keys: the
# workflow on the main branch of the repository var.github_repository_id
# exchanges its OIDC token for this deployer account (Workload Identity
# Federation). Nothing here exists while github_repository_id is empty.
#
# The trust is keyed on the repository's numeric ID (the token's
# repository_id claim), not on its name: a name can be freed (rename,
# transfer, deletion) and claimed by someone else, an ID never.
#
# Note: a deleted workload identity pool is kept (soft-deleted) for 30 days and
# its ID cannot be reused meanwhile; after destroy.sh, undelete it with
# `gcloud iam workload-identity-pools undelete` or pick another service_name.

locals {
  github_enabled = var.github_repository_id != "" ? 1 : 0
  github_label   = var.github_repository != "" ? var.github_repository : "repository ${var.github_repository_id}"
}

resource "google_iam_workload_identity_pool" "github" {
  count = local.github_enabled

  workload_identity_pool_id = "${var.service_name}-github"
  display_name              = "${var.service_name} GitHub Actions"
  description               = "GitHub Actions of ${local.github_label}"

  depends_on = [google_project_service.apis]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins assertion.repository_id (the numeric id, which a renamed, transferred or re-created repository does not carry over) and assertion.ref to main; this check only recognises name-based assertion.sub == "repo:owner/name:..." conditions.
  count = local.github_enabled

  workload_identity_pool_id          = google_iam_workload_identity_pool.github[0].workload_identity_pool_id
  workload_identity_pool_provider_id = "github-actions"
  display_name                       = "GitHub Actions OIDC"

  attribute_mapping = {
    "google.subject"          = "assertion.sub"
    "attribute.repository"    = "assertion.repository"
    "attribute.repository_id" = "assertion.repository_id"
    "attribute.ref"           = "assertion.ref"
  }

  # Only workflow runs of this repository (by ID) on its main branch can use
  # the pool at all.
  attribute_condition = "assertion.repository_id == \"${var.github_repository_id}\" && assertion.ref == \"refs/heads/main\""

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "deployer" {
  count = local.github_enabled

  account_id   = "${var.service_name}-deploy"
  display_name = "scorer deployer (GitHub Actions)"
  description  = "Pushes images and rolls the scorer services from ${local.github_label}@main."

  depends_on = [google_project_service.apis]
}

resource "google_service_account_iam_member" "github_impersonates_deployer" {
  count = local.github_enabled

  service_account_id = google_service_account.deployer[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github[0].name}/attribute.repository_id/${var.github_repository_id}"
}

resource "google_artifact_registry_repository_iam_member" "deployer_pushes_images" {
  count = local.github_enabled

  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deployer[0].member
}

# Update the services (new revision, traffic) ...
resource "google_cloud_run_v2_service_iam_member" "deployer_develops" {
  for_each = local.github_enabled == 1 ? toset(keys(local.services)) : toset([])

  name     = google_cloud_run_v2_service.services[each.key].name
  location = google_cloud_run_v2_service.services[each.key].location
  role     = "roles/run.developer"
  member   = google_service_account.deployer[0].member
}

# ... and the shard job's image (deploy.sh rolls it with the services) ...
resource "google_cloud_run_v2_job_iam_member" "deployer_develops_shard_job" {
  count = local.github_enabled * local.shard_enabled

  name     = google_cloud_run_v2_job.shard[0].name
  location = google_cloud_run_v2_job.shard[0].location
  role     = "roles/run.developer"
  member   = google_service_account.deployer[0].member
}

# ... whose revisions and tasks run as the runtime accounts.
resource "google_service_account_iam_member" "deployer_acts_as" {
  for_each = local.github_enabled == 1 ? merge(
    {
      runtime = google_service_account.runtime.name
      predict = google_service_account.predict.name
    },
    var.shard_job_enabled ? { shard = one(google_service_account.shard[*].name) } : {},
  ) : {}

  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer[0].member
}

# deploy.sh reads `terraform output`, which is in the remote state.
resource "google_storage_bucket_iam_member" "deployer_reads_state" {
  count = var.github_repository_id != "" && var.tf_state_bucket != "" ? 1 : 0

  bucket = var.tf_state_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.deployer[0].member
}
