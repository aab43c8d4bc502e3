# With trigger = "pubsub" (the default): storage notifications -> topic ->
# push subscription -> Cloud Run (POST /). Notifications that keep failing go
# to the dead-letter topic, where a pull subscription keeps them 7 days for
# inspection and redrive
# (`scorer redrive --subscription <dead_letter_subscription> --topic <topic>`).
# With trigger = "eventarc" none of this exists: eventarc.tf.

resource "google_pubsub_topic" "input_events" {
  #checkov:skip=CKV_GCP_83:Notifications carry object metadata only (no data); Google-managed encryption is enough and a CMEK would need a KMS key ring outside this module.
  count = local.pubsub_enabled

  name = "${var.service_name}-input-events"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letters" {
  #checkov:skip=CKV_GCP_83:Dead letters are the same object notifications (metadata only); Google-managed encryption is enough.
  count = local.pubsub_enabled

  name = "${var.service_name}-dead-letters"

  # Kept on the topic too, so a pull subscription created later can seek back.
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

# The Cloud Storage service agent publishes the notifications.
resource "google_pubsub_topic_iam_member" "gcs_publishes_input_events" {
  count = local.pubsub_enabled

  topic  = google_pubsub_topic.input_events[0].id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the
# dead-letter topic and acknowledge (subscriber) on the source subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  count = local.pubsub_enabled

  topic  = google_pubsub_topic.dead_letters[0].id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_acks_push" {
  count = local.pubsub_enabled

  subscription = google_pubsub_subscription.push[0].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_pubsub_subscription" "push" {
  count = local.pubsub_enabled

  name  = "${var.service_name}-push"
  topic = google_pubsub_topic.input_events[0].id

  # For a push subscription the ack deadline is how long Pub/Sub waits for the
  # HTTP answer. A push request lasts as long as its job, so this is the push
  # service's request timeout: one variable (at most 600 s, Pub/Sub's limit)
  # feeds both, and they cannot disagree.
  ack_deadline_seconds = var.request_timeout_seconds

  message_retention_duration = "604800s"

  # Never expire for inactivity (quiet weeks are normal for a batch input).
  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.services["push"].uri}/"

    # Signed by Google for the push service account, with a fixed audience
    # that the service checks (PUSH_AUDIENCE, PUSH_SERVICE_ACCOUNT) and Cloud
    # Run accepts (custom_audiences).
    oidc_token {
      service_account_email = google_service_account.push[0].email
      audience              = var.push_audience
    }
  }

  # 429 (Cloud Run had no free instance: max_instances reached and the queue
  # full; or the job runs elsewhere) and 5xx are retried with exponential
  # backoff: 10 s, 20 s, 40 s, ... up to 600 s between attempts.
  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }

  # How max_delivery_attempts (default 50) was chosen: every delivery counts,
  # including the 429s Cloud Run answers when a burst finds every instance
  # busy at max_instances (the app itself no longer refuses: its request
  # concurrency equals its job slots), so a small number would dead-letter
  # healthy files during a backlog. With the backoff above, attempts 1-7 are spread over about 10
  # minutes (10+20+...+320 s) and each later one waits 600 s, so 50 attempts
  # keep a notification alive for about 7.5 hours (more when Pub/Sub slows its
  # push rate after errors): a backlog that keeps every instance busy for a
  # working shift still drains without dead letters. A message that fails
  # that long is a poison message or an outage: it lands on the dead-letter
  # topic, an alert fires, and it is redriven once fixed. Permanent input
  # errors never count here: the service reports them and answers 2xx.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letters[0].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  depends_on = [
    google_pubsub_topic_iam_member.pubsub_agent_publishes_dead_letters,
    google_cloud_run_v2_service_iam_member.push_invoker,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
  ]
}

# Dead letters wait here (7 days) for inspection and redrive; an alert fires
# while it holds messages (monitoring.tf).
resource "google_pubsub_subscription" "dead_letters" {
  count = local.pubsub_enabled

  name  = "${var.service_name}-dead-letters-pull"
  topic = google_pubsub_topic.dead_letters[0].id

  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}
