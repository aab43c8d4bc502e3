# Two Cloud Run services from the same image, so that neither workload starves
# the other:
#
#   push     POST / (Pub/Sub push), GET /health, /ready, /metrics.
#            SERVICE_ROLE=push: /predict answers 404. One request = one job,
#            and its request concurrency IS its job slots.
#   predict  POST /predict, GET /health, /ready, /metrics, /openapi.json.
#            SERVICE_ROLE=predict: POST / answers 404. Short CPU-bound
#            requests, high concurrency, its own scaling, invokers and SLOs.

locals {
  # Environment both services share: the model, logs, traces.
  common_env = merge(
    {
      OUTPUT_BUCKET = google_storage_bucket.output.name
      LOG_FORMAT    = "json"
      # Names the request's trace in every log line (logging.googleapis.com/trace).
      GOOGLE_CLOUD_PROJECT = var.project_id
      RUST_LOG             = var.log_level
    },
    var.model_uri != "" ? { MODEL_URI = var.model_uri } : {},
    var.training_data_uri != "" ? { TRAINING_DATA_URI = var.training_data_uri } : {},
  )

  push_env = merge(local.common_env, {
    SERVICE_ROLE         = "push"
    INPUT_BUCKET         = google_storage_bucket.input.name
    PUSH_AUDIENCE        = var.push_audience
    PUSH_SERVICE_ACCOUNT = google_service_account.push.email
    # The same number as the service's max_instance_request_concurrency below.
    MAX_CONCURRENT_JOBS = tostring(var.max_concurrent_jobs)
    LEASE_TTL_SECONDS   = tostring(var.lease_ttl_seconds)
    }, var.inline_max_bytes != null ? {
    INLINE_MAX_BYTES = tostring(var.inline_max_bytes)
  } : {})

  predict_env = merge(local.common_env, {
    SERVICE_ROLE = "predict"
  })
}

# The service was named "scorer" when one service did everything.
moved {
  from = google_cloud_run_v2_service.scorer
  to   = google_cloud_run_v2_service.push
}

resource "google_cloud_run_v2_service" "push" {
  name     = local.push_service_name
  location = var.region
  ingress  = var.ingress

  deletion_protection = var.deletion_protection

  # Only IAM-authorised callers (the push account): unauthenticated
  # invocation stays off.
  invoker_iam_disabled = false

  # Pub/Sub tokens carry this fixed audience instead of the service URL.
  custom_audiences = [var.push_audience]

  template {
    service_account = google_service_account.runtime.email
    # The same value is the push subscription's ack deadline (pubsub.tf): Pub/Sub
    # waits exactly as long for the answer as Cloud Run lets the request run.
    timeout = "${var.request_timeout_seconds}s"
    # Request concurrency == job slots, by construction (one variable feeds
    # this and MAX_CONCURRENT_JOBS): a push never finds its instance's slots
    # full, so the app does not answer 429 to healthy load (which would burn
    # one of the subscription's delivery attempts and slow Pub/Sub down);
    # Cloud Run queues the extra pushes briefly and scales out on concurrency.
    max_instance_request_concurrency = var.max_concurrent_jobs
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = "${local.image_uri}:${var.image_tag}"

      # Cloud Run sets PORT to this; the binary listens on $PORT.
      ports {
        name           = "http1"
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        # CPU only while requests are in flight (request-based billing). This
        # is safe only because a job never outlives its request: the push
        # request is answered when the job has committed its manifest (or its
        # failure report), leases are renewed from inside the job, and nothing
        # runs in the background between requests. A job that would not fit
        # in the request timeout is not started inline: inputs larger than
        # INLINE_MAX_BYTES get a failure report at once (docs/DEPLOY.md,
        # "Size admission"). Were jobs ever to continue after the response,
        # this must become false (instance-based billing), or the job is
        # throttled, its lease lapses and another instance starts it again.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.push_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Ready once the model is loaded (or fitted from TRAINING_DATA_URI).
      startup_probe {
        http_get {
          path = "/ready"
        }
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 2
        failure_threshold     = 60
      }

      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    # deploy.sh rolls out new images and moves traffic (--rollback); Terraform
    # manages everything else and does not undo those.
    ignore_changes = [
      client,
      client_version,
      traffic,
      template[0].revision,
      template[0].containers[0].image,
    ]

    precondition {
      condition     = var.image_tag != ""
      error_message = "image_tag is empty: run ./setup.sh (it builds the image and writes terraform/image.auto.tfvars.json), or pass -var image_tag=<a tag in the Artifact Registry repository>."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.runtime_reads_input,
    google_storage_bucket_iam_member.runtime_reads_output,
    google_storage_bucket_iam_member.runtime_creates_output,
    google_storage_bucket_iam_member.runtime_reads_model,
  ]
}

resource "google_cloud_run_v2_service" "predict" {
  name     = local.predict_service_name
  location = var.region
  ingress  = var.predict_ingress

  deletion_protection = var.deletion_protection

  # Only var.predict_invokers may call it (iam.tf).
  invoker_iam_disabled = false

  template {
    service_account                  = google_service_account.predict.email
    timeout                          = "${var.predict_request_timeout_seconds}s"
    max_instance_request_concurrency = var.predict_concurrency
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = var.predict_min_instances
      max_instance_count = var.predict_max_instances
    }

    containers {
      image = "${local.image_uri}:${var.image_tag}"

      ports {
        name           = "http1"
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.predict_cpu
          memory = var.predict_memory
        }
        # Every /predict answer is computed inside its request.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.predict_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.predict_api_keys_secret != "" ? [var.predict_api_keys_secret] : []
        content {
          name = "PREDICT_API_KEYS"
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        http_get {
          path = "/ready"
        }
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 2
        failure_threshold     = 60
      }

      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    ignore_changes = [
      client,
      client_version,
      traffic,
      template[0].revision,
      template[0].containers[0].image,
    ]

    precondition {
      condition     = var.image_tag != ""
      error_message = "image_tag is empty: run ./setup.sh (it builds the image and writes terraform/image.auto.tfvars.json), or pass -var image_tag=<a tag in the Artifact Registry repository>."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.predict_reads_model,
    google_storage_bucket_iam_member.predict_creates_models,
    google_secret_manager_secret_iam_member.predict_reads_api_keys,
  ]
}
