# How new input files reach the push service (POST /): var.trigger.
#
#   pubsub    (default) bucket notification -> topic -> push subscription built
#             in pubsub.tf: dead-letter topic, exponential retry policy, a fixed
#             token audience, ack deadline = the request timeout.
#   eventarc  an Eventarc trigger on the input bucket's finalized objects, below:
#             Eventarc creates and manages the topic and subscription itself
#             (CloudEvents in binary content mode: ce-* headers, the object's
#             JSON as the body). Fewer resources, Google's recommended path;
#             no dead-letter topic or retry policy configured here, and its
#             tokens carry the service URL as their audience.
#
# docs/DEPLOY.md, "Pub/Sub or Eventarc", compares the two.

locals {
  pubsub_enabled   = var.trigger == "pubsub" ? 1 : 0
  eventarc_enabled = var.trigger == "eventarc" ? 1 : 0

  # The account whose Google-signed tokens the push service accepts
  # (PUSH_SERVICE_ACCOUNT), and the audience they carry (PUSH_AUDIENCE).
  push_identity = var.trigger == "pubsub" ? one(google_service_account.push[*].email) : one(google_service_account.events[*].email)
  # Pub/Sub's tokens carry the fixed audience set on the subscription.
  # Eventarc's carry the push service's URL, which no argument of
  # google_eventarc_trigger can change, and which the service cannot be
  # given in the apply that creates it (a service referring to its own uri
  # is a cycle): setup.sh reads it back once the service exists
  # (eventarc_push_audience, eventarc.auto.tfvars.json) and applies again.
  # Until then this placeholder matches no token: pushes get 401 and are
  # retried, none is lost.
  push_audience = var.trigger == "pubsub" ? var.push_audience : (var.eventarc_push_audience != "" ? var.eventarc_push_audience : "unset:eventarc_push_audience")

  # Eventarc requires a Cloud Storage trigger in the bucket's location.
  eventarc_location = lower(local.bucket_location)
}

# The trigger's identity: Eventarc signs its requests as this account.
resource "google_service_account" "events" {
  count = local.eventarc_enabled

  account_id   = "${var.service_name}-events"
  display_name = "scorer Eventarc trigger identity"
  description  = "Identity of the Eventarc trigger on the input bucket: receives its events and may invoke the push service. Nothing else."

  depends_on = [google_project_service.apis]
}

# Receiving events is granted on the project (Eventarc checks it there).
resource "google_project_iam_member" "events_receives_events" {
  count = local.eventarc_enabled

  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.events[0].member
}

# Invoking: the push service only.
resource "google_cloud_run_v2_service_iam_member" "events_invoker" {
  count = local.eventarc_enabled

  name     = google_cloud_run_v2_service.services["push"].name
  location = google_cloud_run_v2_service.services["push"].location
  role     = "roles/run.invoker"
  member   = google_service_account.events[0].member
}

# Pub/Sub (Eventarc's transport) mints the tokens for the trigger's account
# (needed in projects whose Pub/Sub predates April 2021, harmless elsewhere).
resource "google_service_account_iam_member" "pubsub_agent_mints_event_tokens" {
  count = local.eventarc_enabled

  service_account_id = google_service_account.events[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# The Cloud Storage service agent publishes the bucket's events to the topic
# Eventarc creates (its name is Eventarc's, not known here: the grant is on
# the project, as Eventarc documents it for Cloud Storage triggers).
resource "google_project_iam_member" "gcs_publishes_events" {
  count = local.eventarc_enabled

  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_eventarc_trigger" "input_finalized" {
  count = local.eventarc_enabled

  name     = "${var.service_name}-input-finalized"
  location = local.eventarc_location

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.storage.object.v1.finalized"
  }

  matching_criteria {
    attribute = "bucket"
    value     = google_storage_bucket.input.name
  }

  destination {
    cloud_run_service {
      service = google_cloud_run_v2_service.services["push"].name
      region  = google_cloud_run_v2_service.services["push"].location
      path    = "/"
    }
  }

  service_account = google_service_account.events[0].email

  # Every grant the delivery needs exists before the first event can flow
  # (a file uploaded before would be retried, not lost, but with 401/403s).
  depends_on = [
    google_project_service.apis,
    google_project_iam_member.events_receives_events,
    google_project_iam_member.gcs_publishes_events,
    google_cloud_run_v2_service_iam_member.events_invoker,
    google_service_account_iam_member.pubsub_agent_mints_event_tokens,
  ]
}
