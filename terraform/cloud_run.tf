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
  # Environment both services share: the start-up model, logs, traces.
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

  # The model registry (docs/DEPLOY.md, "Model registry"), both services:
  # which model an input or a request gets, and how soon a promote or a
  # rollback is followed. MODEL and MODEL_ROUTES only when set.
  model_routes = join(",", [for prefix in sort(keys(var.model_routes)) : "${prefix}=${var.model_routes[prefix]}"])
  model_env = merge(
    {
      MODEL_REFRESH_SECONDS = tostring(var.model_refresh_seconds)
    },
    var.default_model != "" ? { MODEL = var.default_model } : {},
    length(var.model_routes) > 0 ? { MODEL_ROUTES = local.model_routes } : {},
  )

  # Fit on upload, the push service only: inputs under TRAINING_PREFIX are
  # fitted, and PROMOTE says which aliases the new version takes.
  # (training_prefix as the binary reads it: with a trailing "/".)
  training_prefix = var.training_prefix == "" || endswith(var.training_prefix, "/") ? var.training_prefix : "${var.training_prefix}/"
  fit_env = var.training_prefix != "" ? {
    TRAINING_PREFIX = var.training_prefix
    PROMOTE         = var.promote
  } : {}

  push_env = merge(local.common_env, {
    SERVICE_ROLE = "push"
    INPUT_BUCKET = google_storage_bucket.input.name
    # Whose tokens, for which audience: Pub/Sub's push account and the fixed
    # audience, or Eventarc's trigger account and the service URL (eventarc.tf).
    PUSH_AUDIENCE        = local.push_audience
    PUSH_SERVICE_ACCOUNT = local.push_identity
    # The same number as the service's max_instance_request_concurrency below.
    MAX_CONCURRENT_JOBS = tostring(var.max_concurrent_jobs)
    LEASE_TTL_SECONDS   = tostring(var.lease_ttl_seconds)
    }, var.shard_job_enabled ? {
    # Inputs over INLINE_MAX_BYTES start an execution of the shard job
    # (cloud_run_job.tf); without it they get a committed failure report.
    SHARD_JOB   = local.shard_job_id
    SHARD_BYTES = tostring(var.shard_bytes)
    MAX_TASKS   = tostring(var.shard_max_tasks)
    # The job's max_retries, from the same variable.
    SHARD_MAX_RETRIES = tostring(var.shard_max_retries)
    # At least what one execution can take (cloud_run_job.tf).
    DISPATCH_STALE_SECONDS = tostring(local.dispatch_stale_seconds)
    } : {}, var.inline_max_bytes != null ? {
    INLINE_MAX_BYTES = tostring(var.inline_max_bytes)
    } : {},
    # BIGQUERY_TABLE, BIGQUERY_LOCATION and OUTPUT_FORMAT=parquet with
    # bigquery_enabled (bigquery.tf), RESULTS_TOPIC with results_topic_enabled
    # (results.tf).
    local.bigquery_env,
    local.results_env,
    local.model_env,
    local.fit_env,
  )

  predict_env = merge(local.common_env, {
    SERVICE_ROLE = "predict"
  }, local.model_env)
}

# Each service's own settings (the variables named predict_* are the predict
# service's); everything else the resource below states once for both.
locals {
  services = {
    push = {
      name    = local.push_service_name
      ingress = var.ingress
      # Pub/Sub tokens carry this fixed audience instead of the service URL
      # (Eventarc's carry the service URL, which Cloud Run always accepts).
      custom_audiences = var.trigger == "pubsub" ? [var.push_audience] : null
      service_account  = google_service_account.runtime.email
      # The same value is the push subscription's ack deadline (pubsub.tf): Pub/Sub
      # waits exactly as long for the answer as Cloud Run lets the request run.
      timeout_seconds = var.request_timeout_seconds
      # Request concurrency == job slots, by construction (one variable feeds
      # this and MAX_CONCURRENT_JOBS): a push never finds its instance's slots
      # full, so the app does not answer 429 to healthy load (which would burn
      # one of the subscription's delivery attempts and slow Pub/Sub down);
      # Cloud Run queues the extra pushes briefly and scales out on concurrency.
      concurrency   = var.max_concurrent_jobs
      min_instances = var.min_instances
      max_instances = var.max_instances
      cpu           = var.cpu
      memory        = var.memory
      env           = local.push_env
      secret_env    = {}
    }
    predict = {
      name    = local.predict_service_name
      ingress = var.predict_ingress
      # Callers use the service URL as the audience.
      custom_audiences = null
      service_account  = google_service_account.predict.email
      timeout_seconds  = var.predict_request_timeout_seconds
      concurrency      = var.predict_concurrency
      min_instances    = var.predict_min_instances
      max_instances    = var.predict_max_instances
      cpu              = var.predict_cpu
      memory           = var.predict_memory
      env              = local.predict_env
      # NAME = the Secret Manager secret whose latest version it is given.
      secret_env = var.predict_api_keys_secret != "" ? { PREDICT_API_KEYS = var.predict_api_keys_secret } : {}
    }
  }
}

resource "google_cloud_run_v2_service" "services" {
  for_each = local.services

  name     = each.value.name
  location = var.region
  ingress  = each.value.ingress

  deletion_protection = var.deletion_protection

  # Only IAM-authorised callers (iam.tf: the push account; predict_invokers):
  # unauthenticated invocation stays off.
  invoker_iam_disabled = false

  custom_audiences = each.value.custom_audiences

  template {
    service_account                  = each.value.service_account
    timeout                          = "${each.value.timeout_seconds}s"
    max_instance_request_concurrency = each.value.concurrency
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = each.value.min_instances
      max_instance_count = each.value.max_instances
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
          cpu    = each.value.cpu
          memory = each.value.memory
        }
        # CPU only while requests are in flight (request-based billing). This
        # is safe only because no work outlives its request: every /predict
        # answer is computed inside it, and a job never outlives its request
        # either: the push request is answered when the job has committed its
        # manifest (or its failure report), leases are renewed from inside the
        # job, and nothing runs in the background between requests. A job that
        # would not fit in the request timeout is not started inline: inputs
        # larger than INLINE_MAX_BYTES get a failure report at once
        # (docs/DEPLOY.md, "Size admission"). Were jobs ever to continue after
        # the response, this must become false (instance-based billing), or
        # the job is throttled, its lease lapses and another instance starts
        # it again.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = each.value.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = each.value.secret_env
        content {
          name = env.key
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

    # The binary refuses to start otherwise: inputs under TRAINING_PREFIX
    # are fitted, never scored by a route's model.
    precondition {
      condition     = local.training_prefix == "" || alltrue([for prefix in keys(var.model_routes) : !startswith(prefix, local.training_prefix)])
      error_message = "A model_routes prefix lies under training_prefix (${local.training_prefix}): those inputs are fitted, not scored. Route another prefix, or change training_prefix."
    }
  }

  # Each service's account may read what it needs before its first revision
  # starts (for_each: both services wait for the grants of both accounts).
  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.runtime_reads_input,
    google_storage_bucket_iam_member.runtime_reads_output,
    google_storage_bucket_iam_member.runtime_creates_output,
    google_storage_bucket_iam_member.runtime_reads_model,
    google_storage_bucket_iam_member.runtime_writes_models,
    google_storage_bucket_iam_member.predict_reads_model,
    google_storage_bucket_iam_member.predict_reads_models,
    google_storage_bucket_iam_member.predict_creates_models,
    google_secret_manager_secret_iam_member.predict_reads_api_keys,
    # the push service may start executions of the shard job from its first
    # request on
    google_cloud_run_v2_job_iam_member.runtime_runs_shard_job,
    google_cloud_run_v2_job_iam_member.runtime_views_shard_job,
    google_service_account_iam_member.runtime_acts_as_shard,
    # and may load into BigQuery and publish results from its first request
    # on (bigquery.tf, results.tf)
    google_bigquery_dataset_iam_member.runtime_edits_predictions,
    google_project_iam_member.runtime_runs_bigquery_jobs,
    google_pubsub_topic_iam_member.runtime_publishes_results,
  ]
}
