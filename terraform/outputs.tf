# Read by setup.sh, deploy.sh and destroy.sh (`terraform output -json`).
#
# Terraform writes an output after `terraform apply -target=...` only when the
# output depends on a targeted resource: an output whose value is only a
# variable (`value = var.region`) is missing from the state until the first
# full apply. So everything setup.sh reads between its targeted apply and the
# full apply (project_id, region, image_uri, build_service_account,
# build_bucket) derives from a resource that targeted apply creates
# (tests/infra/test_scripts_terraform.py checks this with the real terraform).

output "project_id" {
  description = "Project that holds everything."
  value       = google_artifact_registry_repository.images.project
}

output "region" {
  description = "Region of the services, the repository and the builds."
  value       = google_artifact_registry_repository.images.location
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

output "push_service_name" {
  description = "Cloud Run service that scores the input files (Pub/Sub pushes to POST /)."
  value       = google_cloud_run_v2_service.services["push"].name
}

output "push_service_url" {
  description = "URL of the push service (only the push service account may invoke it)."
  value       = google_cloud_run_v2_service.services["push"].uri
}

output "predict_service_name" {
  description = "Cloud Run service of the online API (POST /predict)."
  value       = google_cloud_run_v2_service.services["predict"].name
}

output "predict_service_url" {
  description = "URL of the online API: POST <predict_service_url>/predict with an identity token of a predict invoker."
  value       = google_cloud_run_v2_service.services["predict"].uri
}

output "push_request_timeout_seconds" {
  description = "Longest a push request (one file's job) can run: the push service's request timeout, which is also the subscription's ack deadline (trigger = \"pubsub\"; with \"eventarc\", the request timeout). destroy.sh drains this long."
  value       = var.trigger == "pubsub" ? one(google_pubsub_subscription.push[*].ack_deadline_seconds) : var.request_timeout_seconds
}

output "trigger" {
  description = "What announces new input files: pubsub (notification, topic, push subscription) or eventarc (an Eventarc trigger)."
  value       = var.trigger
}

output "eventarc_trigger" {
  description = "The Eventarc trigger on the input bucket (trigger = \"eventarc\"; empty otherwise)."
  value       = one(google_eventarc_trigger.input_finalized[*].id)
}

output "topic" {
  description = "Topic of the input bucket's notifications (also the redrive target); empty with trigger = \"eventarc\"."
  value       = one(google_pubsub_topic.input_events[*].id)
}

output "push_subscription" {
  description = "Push subscription that delivers the notifications to the service; empty with trigger = \"eventarc\"."
  value       = one(google_pubsub_subscription.push[*].id)
}

output "dead_letter_topic" {
  description = "Where notifications go after max_delivery_attempts failed deliveries; empty with trigger = \"eventarc\"."
  value       = one(google_pubsub_topic.dead_letters[*].id)
}

output "dead_letter_subscription" {
  description = "Pull subscription holding dead letters for 7 days (inspect, then scorer redrive); empty with trigger = \"eventarc\"."
  value       = one(google_pubsub_subscription.dead_letters[*].id)
}

output "push_audience" {
  description = "Audience the push service requires of the tokens on its pushes (PUSH_AUDIENCE): the fixed push_audience, or with trigger = \"eventarc\" the service URL once setup.sh has set it."
  value       = local.push_audience
}

output "runtime_service_account" {
  description = "Identity the service runs as."
  value       = google_service_account.runtime.email
}

output "push_service_account" {
  description = "Identity of the tokens on the pushes (PUSH_SERVICE_ACCOUNT): the Pub/Sub push account, or the Eventarc trigger's."
  value       = local.push_identity
}

output "build_service_account" {
  description = "Identity of the Cloud Build builds (gcloud builds submit --service-account)."
  value       = google_service_account.builder.email
}

output "build_bucket" {
  description = "Staging bucket for the sources gcloud builds submit uploads."
  value       = google_storage_bucket.build_staging.name
}

output "alert_notification_channels" {
  description = "Where the alerts go (alert_email, notification_channels). Empty: alerts fire silently (setup.sh warns)."
  value       = local.notification_channels
}

output "dashboard" {
  description = "Cloud Monitoring dashboard."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${element(split("/", google_monitoring_dashboard.scorer.id), 3)}?project=${var.project_id}"
}

output "github_workload_identity_provider" {
  description = "For the workflow's GCP_WORKLOAD_IDENTITY_PROVIDER secret (empty without github_repository_id)."
  value       = local.github_enabled == 1 ? google_iam_workload_identity_pool_provider.github[0].name : ""
}

output "github_deployer_service_account" {
  description = "For the workflow's GCP_DEPLOY_SERVICE_ACCOUNT secret (empty without github_repository_id)."
  value       = local.github_enabled == 1 ? google_service_account.deployer[0].email : ""
}

output "shard_job_name" {
  description = "Cloud Run job whose executions score inputs over INLINE_MAX_BYTES (deploy.sh rolls its image with the services'); empty with shard_job_enabled = false."
  value       = one(google_cloud_run_v2_job.shard[*].name)
}

output "shard_job" {
  description = "The shard job as the push service names it (SHARD_JOB): projects/P/locations/L/jobs/J; empty without it."
  value       = local.shard_job_id
}

output "shard_service_account" {
  description = "Identity the shard job's tasks run as (empty without the job)."
  value       = one(google_service_account.shard[*].email)
}

output "dispatch_stale_seconds" {
  description = "DISPATCH_STALE_SECONDS of the push service: how long a started execution is presumed running."
  value       = var.shard_job_enabled ? local.dispatch_stale_seconds : null
}

output "bigquery_dataset" {
  description = "BigQuery dataset of the predictions table (bigquery_enabled; empty otherwise)."
  value       = one(google_bigquery_dataset.predictions[*].dataset_id)
}

output "bigquery_table" {
  description = "The predictions table as the services name it (BIGQUERY_TABLE): project.dataset.table; empty without bigquery_enabled."
  value       = local.bigquery_table
}

output "results_topic" {
  description = "Topic the services publish results to (RESULTS_TOPIC): projects/P/topics/T; empty without results_topic_enabled."
  value       = one(google_pubsub_topic.results[*].id)
}

output "results_subscription" {
  description = "The example pull subscription on the results topic; empty without results_topic_enabled."
  value       = one(google_pubsub_subscription.results_example[*].id)
}
