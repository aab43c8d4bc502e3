# A results topic (results_topic_enabled, off by default): the scorer may
# publish a message on it for each scored input, for whatever consumes the
# predictions next. The push service and the shard job's tasks are told
# where:
#   RESULTS_TOPIC  projects/P/topics/<service_name>-results
# and may publish there (that topic only). An example pull subscription
# shows a consumer's side. Nothing here exists with results_topic_enabled =
# false, and RESULTS_TOPIC is not set.

locals {
  results_enabled = var.results_topic_enabled ? 1 : 0

  # Merged into the push service's environment (cloud_run.tf) and the shard
  # job's (cloud_run_job.tf).
  results_env = var.results_topic_enabled ? {
    RESULTS_TOPIC = one(google_pubsub_topic.results[*].id)
  } : {}
}

resource "google_pubsub_topic" "results" {
  #checkov:skip=CKV_GCP_83:Result messages name outputs and counts (metadata, no input data); Google-managed encryption is enough and a CMEK would need a KMS key ring outside this module.
  count = local.results_enabled

  name = "${var.service_name}-results"

  # Kept on the topic too, so a consumer subscribing later can seek back.
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

# An example consumer, not used by the scorer: a pull subscription that keeps
# each result message 7 days until it is acknowledged. Consumers of their
# own subscribe to the topic the same way (and this one can be deleted).
resource "google_pubsub_subscription" "results_example" {
  count = local.results_enabled

  name  = "${var.service_name}-results-example"
  topic = google_pubsub_topic.results[0].id

  message_retention_duration = "604800s"
  # How long a puller has to acknowledge a message before it is delivered
  # again.
  ack_deadline_seconds = 60

  # Never expire for inactivity (quiet weeks are normal for a batch input).
  expiration_policy {
    ttl = ""
  }
}

# --- who may publish: the push service's account and the shard job's --------

resource "google_pubsub_topic_iam_member" "runtime_publishes_results" {
  count = local.results_enabled

  topic  = google_pubsub_topic.results[0].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.runtime.member
}

resource "google_pubsub_topic_iam_member" "shard_publishes_results" {
  count = var.results_topic_enabled && var.shard_job_enabled ? 1 : 0

  topic  = google_pubsub_topic.results[0].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.shard[0].member
}
