# Read by setup.sh, deploy.sh and destroy.sh (`terraform output -json`).

output "project_id" {
  description = "Project that holds everything."
  value       = var.project_id
}

output "region" {
  description = "Region of the service, the repository and the builds."
  value       = var.region
}

output "input_bucket" {
  description = "Upload CSV files here: gsutil cp file.csv gs://<input_bucket>/"
  value       = google_storage_bucket.input.name
}

output "output_bucket" {
  description = "Predictions, errors and manifests appear here under <input object>/<generation>/."
  value       = google_storage_bucket.output.name
}

output "image_uri" {
  description = "Image repository path without a tag; the scripts tag images with the git commit."
  value       = local.image_uri
}

output "service_name" {
  description = "Cloud Run service."
  value       = google_cloud_run_v2_service.scorer.name
}

output "service_url" {
  description = "URL of the service (POST /predict with an identity token of a predict invoker)."
  value       = google_cloud_run_v2_service.scorer.uri
}

output "topic" {
  description = "Topic of the input bucket's notifications (also the redrive target)."
  value       = google_pubsub_topic.input_events.id
}

output "push_subscription" {
  description = "Push subscription that delivers the notifications to the service."
  value       = google_pubsub_subscription.push.id
}

output "dead_letter_topic" {
  description = "Where notifications go after max_delivery_attempts failed deliveries."
  value       = google_pubsub_topic.dead_letters.id
}

output "dead_letter_subscription" {
  description = "Pull subscription holding dead letters for 7 days (inspect, then scorer redrive)."
  value       = google_pubsub_subscription.dead_letters.id
}

output "push_audience" {
  description = "Audience of the push OIDC tokens."
  value       = var.push_audience
}

output "runtime_service_account" {
  description = "Identity the service runs as."
  value       = google_service_account.runtime.email
}

output "push_service_account" {
  description = "Identity of the Pub/Sub push tokens."
  value       = google_service_account.push.email
}

output "build_service_account" {
  description = "Identity of the Cloud Build builds (gcloud builds submit --service-account)."
  value       = google_service_account.builder.email
}

output "build_bucket" {
  description = "Staging bucket for the sources gcloud builds submit uploads."
  value       = google_storage_bucket.build_staging.name
}

output "dashboard" {
  description = "Cloud Monitoring dashboard."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${element(split("/", google_monitoring_dashboard.scorer.id), 3)}?project=${var.project_id}"
}

output "github_workload_identity_provider" {
  description = "For the workflow's GCP_WORKLOAD_IDENTITY_PROVIDER variable (empty without github_repository)."
  value       = var.github_repository != "" ? google_iam_workload_identity_pool_provider.github[0].name : ""
}

output "github_deployer_service_account" {
  description = "For the workflow's GCP_DEPLOY_SERVICE_ACCOUNT variable (empty without github_repository)."
  value       = var.github_repository != "" ? google_service_account.deployer[0].email : ""
}
