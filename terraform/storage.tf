# Input and output buckets.
#
# Output layout (app/src/layout.rs), written by the service:
#   <input object>/<generation>/predictions.csv  (.jsonl, .parquet: OUTPUT_FORMAT)
#   <input object>/<generation>/errors.csv      (only when rows were rejected)
#   <input object>/<generation>/manifest.json   (written last: the commit point;
#                 for a training file under TRAINING_PREFIX, the fit's manifest)
#   <input object>/<generation>/bigquery.json, results.json   (bigquery.tf, results.tf)
#   <input object>/<generation>/curves/<version>/roc.svg, precision_recall.svg,
#                 calibration.svg, curves.json   (labelled inputs and fits)
#   <input object>/<generation>/promoted.json   (a fit on upload: the aliases it moved)
#   _by-hash/<sha256>/<generation>/...   the same, for an input name that
#                 cannot lead its outputs' names (too long, odd, or starting with _)
#   _leases/...   small coordination objects, deleted after lease_retention_days
#   _models/...   the model registry, never deleted by a rule (below):
#                 _models/<name>/<hex>.json       a model version (create-only)
#                 _models/<name>/<hex>.fit.json   the fit that made it (create-only)
#                 _models/<name>/@<alias>         which version an alias points to:
#                 overwritten (compare-and-swap) by the push service and by
#                 operators (`scorer model promote|rollback`)
# and for an input scored by the shard job (cloud_run_job.tf):
#   <input object>/<generation>/predictions-0000i-of-0000N.csv   one per task
#   _shards/<input object>/<generation>/...   dispatch and shard records,
#                 per-task rejects: deleted after shard_retention_days
# Everything but the aliases is written create-only.

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

# The output bucket's lifecycle rules must never delete the registry
# (_models/), and a rule's conditions can only include names, by prefix or by
# suffix, never exclude them. So the rules that delete "everything else" name
# everything else, in two ways (an object matching either is deleted):
locals {
  # By prefix. Every name the service writes outside _models/ starts either
  # with its own _by-hash/, _leases/ or _shards/, or with the first character
  # of an input name, which is never "_" (app/src/layout.rs: such a name's
  # outputs go under _by-hash/). Hence those three and every printable ASCII
  # character but "_" (94 of them): none of them is a prefix of "_models/".
  outputs_by_prefix = concat(
    ["_by-hash/", "_leases/", "_shards/"],
    [for c in split("", " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~") : c if c != "_"],
  )
  # By file name, for an input name that starts with any other character
  # (é, 日, ...): "/" and the whole file name, which no registry object ends
  # with (theirs end in /<16 hex digits>.json, /<16 hex digits>.fit.json or
  # /@<alias>; a bare ".csv" would match an alias named "x.csv"). Not
  # covered: such an input's shard-job predictions (predictions-i-of-N.csv)
  # and renumbered retries (predictions.2.csv), which stay until deleted by
  # hand (docs/DEPLOY.md, "Model registry").
  outputs_by_name = [
    for file in [
      "predictions.csv", "predictions.jsonl", "predictions.parquet", "errors.csv", "manifest.json",
      "bigquery.json", "results.json", "promoted.json",
      "roc.svg", "precision_recall.svg", "calibration.svg", "curves.json",
    ] : "/${file}"
  ]
}

resource "google_storage_bucket" "output" {
  #checkov:skip=CKV_GCP_62:Object access is audited with Cloud Audit Logs (Data Access logs for storage.googleapis.com), not legacy usage-log buckets.
  name          = local.output_bucket
  location      = local.bucket_location
  storage_class = "STANDARD"
  force_destroy = var.force_destroy_buckets

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # The service deletes nothing and overwrites only the registry's aliases
  # (_models/<name>/@<alias>, each change a new generation). Versioning keeps
  # every earlier generation of an alias (its history, for audit), and with
  # soft delete protects outputs from people and from the rules below.
  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 604800
  }

  # --- live objects: no rule can match _models/ -----------------------------

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

  # Old outputs: everything but _models/ (leases and shard records too, when
  # this is the shorter), by prefix ...
  dynamic "lifecycle_rule" {
    for_each = var.output_retention_days > 0 ? [var.output_retention_days] : []
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = local.outputs_by_prefix
        with_state     = "LIVE"
      }
      action {
        type = "Delete"
      }
    }
  }

  # ... and by file name.
  dynamic "lifecycle_rule" {
    for_each = var.output_retention_days > 0 ? [var.output_retention_days] : []
    content {
      condition {
        age            = lifecycle_rule.value
        matches_suffix = local.outputs_by_name
        with_state     = "LIVE"
      }
      action {
        type = "Delete"
      }
    }
  }

  # --- noncurrent versions --------------------------------------------------

  # A deleted object (by the rules above, or by a person) stays a noncurrent
  # version: outside _models/ for a day (then soft delete's 7), or the
  # deleted leases and outputs of a busy bucket would pile up.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      matches_prefix             = local.outputs_by_prefix
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      matches_suffix             = local.outputs_by_name
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # The registry's history (every earlier generation of an alias) is kept
  # model_history_days, 0: for ever. Having no name condition, this rule is
  # also the longest any other noncurrent version can stay.
  dynamic "lifecycle_rule" {
    for_each = var.model_history_days > 0 ? [var.model_history_days] : []
    content {
      condition {
        days_since_noncurrent_time = lifecycle_rule.value
        with_state                 = "ARCHIVED"
      }
      action {
        type = "Delete"
      }
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
