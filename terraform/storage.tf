# Input and output buckets.
#
# Output layout (written by the service, create-only):
#   <input object>/<generation>/predictions.csv
#   <input object>/<generation>/errors.csv      (only when rows were rejected)
#   <input object>/<generation>/manifest.json   (written last: the commit point)
#   _leases/...   small coordination objects, deleted after lease_retention_days
#   _models/...   a model fitted at start from TRAINING_DATA_URI
# and for an input scored by the shard job (cloud_run_job.tf):
#   <input object>/<generation>/predictions-0000i-of-0000N.csv   one per task
#   _shards/<input object>/<generation>/...   dispatch and shard records,
#                 per-task rejects: deleted after shard_retention_days

resource "google_storage_bucket" "input" {
  #checkov:skip=CKV_GCP_62:Object access is audited with Cloud Audit Logs (Data Access logs for storage.googleapis.com), not legacy usage-log buckets.
  #checkov:skip=CKV_GCP_78:Input versioning is opt-in (var.input_versioning): outputs are keyed by the input's generation, and versions plus soft delete would store a re-uploaded file up to three times.
  name          = local.input_bucket
  location      = local.bucket_location
  storage_class = "STANDARD"
  force_destroy = var.force_destroy_buckets

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Opt-in (input_versioning, input_soft_delete_days): each upload is scored
  # under its own generation, so old versions only cost storage. With
  # versioning on, a replaced or deleted input stays a noncurrent version for
  # noncurrent_version_retention_days; with soft delete, that long again.
  versioning {
    enabled = var.input_versioning
  }

  soft_delete_policy {
    retention_duration_seconds = var.input_soft_delete_days * 86400
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.input_retention_days > 0 ? [var.input_retention_days] : []
    content {
      condition {
        age        = lifecycle_rule.value
        with_state = "LIVE"
      }
      action {
        type = "Delete"
      }
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "output" {
  #checkov:skip=CKV_GCP_62:Object access is audited with Cloud Audit Logs (Data Access logs for storage.googleapis.com), not legacy usage-log buckets.
  name          = local.output_bucket
  location      = local.bucket_location
  storage_class = "STANDARD"
  force_destroy = var.force_destroy_buckets

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # The service never deletes or overwrites; versions and soft delete protect
  # outputs from people and from the lifecycle rules below.
  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 604800
  }

  # The service's temporary parts: leases of finished (or abandoned) jobs.
  lifecycle_rule {
    condition {
      age            = var.lease_retention_days
      matches_prefix = ["_leases/"]
      with_state     = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  # The shard job's working objects. They sit under their own top-level
  # prefix, _shards/<input object>/<generation>/ (app/src/layout.rs), not
  # beside the outputs, so a prefix matches them exactly and nothing else.
  # The manifest never points at them: it lists the predictions-*-of-*
  # shards and errors.csv, which live under <input object>/<generation>/
  # and keep the outputs' retention below. A task reads them only before
  # the manifest exists (after it, every task stops at the manifest), and
  # the push service reads the dispatch records while an input may still be
  # dispatched again: cloud_run_job.tf checks at plan time that they outlive 3
  # dispatches of DISPATCH_STALE_SECONDS.
  lifecycle_rule {
    condition {
      age            = var.shard_retention_days
      matches_prefix = ["_shards/"]
      with_state     = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  # Old outputs (everything else: predictions, errors, manifests, _models/).
  dynamic "lifecycle_rule" {
    for_each = var.output_retention_days > 0 ? [var.output_retention_days] : []
    content {
      condition {
        age        = lifecycle_rule.value
        with_state = "LIVE"
      }
      action {
        type = "Delete"
      }
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # Interrupted XML-API multipart uploads leave invisible parts behind.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  lifecycle {
    precondition {
      # Outputs must never trigger new work.
      condition     = local.output_bucket != local.input_bucket
      error_message = "The output bucket must differ from the input bucket (outputs would be scored again)."
    }
  }

  depends_on = [google_project_service.apis]
}

# Every finished upload to the input bucket is announced on the topic
# (trigger = "pubsub"; with "eventarc", the trigger in eventarc.tf).
resource "google_storage_notification" "input_finalize" {
  count = local.pubsub_enabled

  bucket         = google_storage_bucket.input.name
  topic          = google_pubsub_topic.input_events[0].id
  payload_format = "JSON_API_V1"
  event_types    = ["OBJECT_FINALIZE"]

  # Creating the notification fails unless the Cloud Storage service agent may
  # already publish to the topic. And it is created only once the push
  # subscription exists: a file uploaded in between would be announced on a
  # topic with no subscription, and that notification would be lost.
  # (destroy.sh deletes it first, before the subscription, for the same reason.)
  depends_on = [
    google_pubsub_topic_iam_member.gcs_publishes_input_events,
    google_pubsub_subscription.push,
  ]
}
