# The scorer service: POST / (Pub/Sub push), POST /predict, GET /health,
# GET /ready, GET /metrics, GET /openapi.json.
resource "google_cloud_run_v2_service" "scorer" {
  name     = var.service_name
  location = var.region
  ingress  = var.ingress

  deletion_protection = var.deletion_protection

  # Only IAM-authorised callers (the push account, var.predict_invokers):
  # unauthenticated invocation stays off.
  invoker_iam_disabled = false

  # Pub/Sub tokens carry this fixed audience instead of the service URL.
  custom_audiences = [var.push_audience]

  template {
    service_account                  = google_service_account.runtime.email
    timeout                          = "${var.request_timeout_seconds}s"
    max_instance_request_concurrency = var.container_concurrency
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
        # A job runs inside its push request, so CPU outside requests is not needed.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "INPUT_BUCKET"
        value = google_storage_bucket.input.name
      }
      env {
        name  = "OUTPUT_BUCKET"
        value = google_storage_bucket.output.name
      }
      env {
        name  = "PUSH_AUDIENCE"
        value = var.push_audience
      }
      env {
        name  = "PUSH_SERVICE_ACCOUNT"
        value = google_service_account.push.email
      }
      env {
        name  = "MAX_CONCURRENT_JOBS"
        value = tostring(var.max_concurrent_jobs)
      }
      env {
        name  = "LEASE_TTL_SECONDS"
        value = tostring(var.lease_ttl_seconds)
      }
      env {
        name  = "LOG_FORMAT"
        value = "json"
      }
      # Names the request's trace in every log line (logging.googleapis.com/trace).
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "RUST_LOG"
        value = var.log_level
      }

      dynamic "env" {
        for_each = var.model_uri != "" ? [var.model_uri] : []
        content {
          name  = "MODEL_URI"
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.training_data_uri != "" ? [var.training_data_uri] : []
        content {
          name  = "TRAINING_DATA_URI"
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
    google_secret_manager_secret_iam_member.runtime_reads_api_keys,
  ]
}
