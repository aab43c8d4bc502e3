# Log-based metrics, SLOs with burn-rate alerts, the dead-letter alert and a
# dashboard. Everything here reads what the service already emits: Cloud Run's
# request metrics, Pub/Sub's subscription metrics, and the one "job summary"
# log entry per input object generation.

# --- log-based metrics from the job summaries --------------------------------

resource "google_logging_metric" "jobs" {
  name        = "${var.service_name}_jobs"
  description = "Input object generations by outcome (scored, failed, duplicate, ignored)."
  filter      = local.job_summary_filter

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "scorer jobs"
    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "scored | failed | duplicate | ignored"
    }
  }

  label_extractors = {
    outcome = "EXTRACT(jsonPayload.outcome)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "rows_scored" {
  name        = "${var.service_name}_rows_scored"
  description = "Rows scored per file (a distribution: its sum is the rows scored)."
  filter      = "${local.job_summary_filter} AND jsonPayload.outcome=\"scored\""

  value_extractor = "EXTRACT(jsonPayload.rows_scored)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "scorer rows scored per file"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 32
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "job_duration" {
  name        = "${var.service_name}_job_duration"
  description = "Duration of each scored file's job, from push to manifest (ms)."
  filter      = "${local.job_summary_filter} AND jsonPayload.outcome=\"scored\""

  value_extractor = "EXTRACT(jsonPayload.duration_ms)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "scorer job duration"
  }

  # Explicit bounds so that every allowed file_latency_budget_ms is a bound
  # and the latency SLI counts exactly.
  bucket_options {
    explicit_buckets {
      bounds = [100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000, 900000]
    }
  }

  depends_on = [google_project_service.apis]
}

# --- SLOs ----------------------------------------------------------------------

resource "google_monitoring_custom_service" "scorer" {
  service_id   = var.service_name
  display_name = "scorer (Cloud Storage -> Pub/Sub -> Cloud Run)"

  depends_on = [google_project_service.apis]
}

locals {
  run_requests = join(" AND ", [
    "metric.type=\"run.googleapis.com/request_count\"",
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${var.service_name}\"",
  ])
}

# Availability: 99.5 % of pushes answered 2xx. Good = 2xx, bad = 5xx, and the
# 4xx are left out on purpose: 429 is the service's back-pressure, expected
# whenever more files arrive than job slots (Pub/Sub retries it, and a file that
# keeps getting 429 ends on the dead-letter topic, which alerts separately);
# 400/401 are malformed or unauthenticated callers, not unavailability.
# Cloud Run's request_count has no path label, so online /predict calls (none
# unless predict_invokers is set) are counted alongside the pushes.
resource "google_monitoring_slo" "push_availability" {
  service             = google_monitoring_custom_service.scorer.service_id
  slo_id              = "push-availability"
  display_name        = "Pushes answered 2xx (${format("%.1f", var.availability_slo_goal * 100)} %, 28 days)"
  goal                = var.availability_slo_goal
  rolling_period_days = 28

  request_based_sli {
    good_total_ratio {
      good_service_filter = "${local.run_requests} AND metric.labels.response_code_class=\"2xx\""
      bad_service_filter  = "${local.run_requests} AND metric.labels.response_code_class=\"5xx\""
    }
  }
}

# Latency: 99 % of files scored within their budget (job duration from the
# push's arrival to the committed manifest, from the job summaries).
resource "google_monitoring_slo" "file_latency" {
  service             = google_monitoring_custom_service.scorer.service_id
  slo_id              = "file-latency"
  display_name        = "Files scored within ${var.file_latency_budget_ms / 1000} s (${format("%.1f", var.latency_slo_goal * 100)} %, 28 days)"
  goal                = var.latency_slo_goal
  rolling_period_days = 28

  request_based_sli {
    distribution_cut {
      distribution_filter = join(" AND ", [
        "metric.type=\"logging.googleapis.com/user/${google_logging_metric.job_duration.name}\"",
        "resource.type=\"cloud_run_revision\"",
      ])
      range {
        max = var.file_latency_budget_ms
      }
    }
  }
}

# --- alerts ----------------------------------------------------------------------

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email != "" ? 1 : 0

  display_name = "scorer on-call (${var.alert_email})"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.apis]
}

# Multi-window burn-rate alerts (28-day budget): 14.4x over 1 h spends 2 % of
# the budget in an hour (page); 6x over 6 h spends 5 % in six hours (ticket).
resource "google_monitoring_alert_policy" "slo_burn" {
  for_each = {
    availability = google_monitoring_slo.push_availability.name
    latency      = google_monitoring_slo.file_latency.name
  }

  display_name          = "scorer: ${each.key} SLO burning its error budget"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "fast burn (14.4x over 1 h)"
    condition_threshold {
      filter          = "select_slo_burn_rate(\"${each.value}\", \"3600s\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 14.4
      duration        = "0s"
    }
  }

  conditions {
    display_name = "slow burn (6x over 6 h)"
    condition_threshold {
      filter          = "select_slo_burn_rate(\"${each.value}\", \"21600s\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 6
      duration        = "0s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      The scorer's ${each.key} SLO is spending its 28-day error budget too fast.
      Look at the job summaries in Logs Explorer:
      `resource.type="cloud_run_revision" resource.labels.service_name="${var.service_name}" jsonPayload.message="job summary"`
      and at 5xx responses of the service. A bad release is undone with `./deploy.sh --rollback`.
    EOT
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "scorer: dead-lettered notifications waiting"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${google_pubsub_subscription.dead_letters.name} holds messages"
    condition_threshold {
      filter = join(" AND ", [
        "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\"",
        "resource.type=\"pubsub_subscription\"",
        "resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letters.name}\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Notifications that failed ${var.max_delivery_attempts} deliveries wait on
      `${google_pubsub_subscription.dead_letters.id}` (kept 7 days).
      Inspect: `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letters.id} --limit 10`
      (without --auto-ack). Once the cause is fixed, send them back:
      `scorer redrive --subscription ${google_pubsub_subscription.dead_letters.id} --topic ${google_pubsub_topic.input_events.id}`.
    EOT
  }
}

resource "google_monitoring_alert_policy" "failed_files" {
  display_name          = "scorer: input files failed"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "job summaries with outcome=failed"
    condition_threshold {
      filter = join(" AND ", [
        "metric.type=\"logging.googleapis.com/user/${google_logging_metric.jobs.name}\"",
        "resource.type=\"cloud_run_revision\"",
        "metric.labels.outcome=\"failed\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      At least one input file could not be scored. Its errors.csv and manifest.json
      are in the output bucket under `<input object>/<generation>/`; the job summary says why:
      `resource.type="cloud_run_revision" resource.labels.service_name="${var.service_name}" jsonPayload.message="job summary" jsonPayload.outcome="failed"`
    EOT
  }
}

# --- dashboard ---------------------------------------------------------------------

locals {
  jobs_metric    = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.jobs.name}\" resource.type=\"cloud_run_revision\""
  dlq_metric     = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letters.name}\""
  latency_metric = "metric.type=\"run.googleapis.com/request_latencies\" resource.type=\"cloud_run_revision\" resource.labels.service_name=\"${var.service_name}\""
}

resource "google_monitoring_dashboard" "scorer" {
  dashboard_json = jsonencode({
    displayName = "scorer"
    mosaicLayout = {
      columns = 12
      tiles = [
        {
          xPos = 0, yPos = 0, width = 6, height = 4
          widget = {
            title = "Files by outcome (per 5 min)"
            xyChart = {
              dataSets = [{
                plotType = "STACKED_BAR"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = local.jobs_metric
                    aggregation = {
                      alignmentPeriod    = "300s"
                      perSeriesAligner   = "ALIGN_SUM"
                      crossSeriesReducer = "REDUCE_SUM"
                      groupByFields      = ["metric.label.outcome"]
                    }
                  }
                }
              }]
            }
          }
        },
        {
          xPos = 6, yPos = 0, width = 6, height = 4
          widget = {
            title = "Rows scored (per 5 min)"
            xyChart = {
              dataSets = [{
                plotType = "STACKED_BAR"
                timeSeriesQuery = {
                  prometheusQuery = "sum(increase(logging_googleapis_com:user_${google_logging_metric.rows_scored.name}_sum{monitored_resource=\"cloud_run_revision\"}[5m]))"
                }
              }]
            }
          }
        },
        {
          xPos = 0, yPos = 4, width = 6, height = 4
          widget = {
            title = "Failed files (per 5 min)"
            xyChart = {
              dataSets = [{
                plotType = "STACKED_BAR"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = "${local.jobs_metric} metric.label.outcome=\"failed\""
                    aggregation = {
                      alignmentPeriod    = "300s"
                      perSeriesAligner   = "ALIGN_SUM"
                      crossSeriesReducer = "REDUCE_SUM"
                    }
                  }
                }
              }]
            }
          }
        },
        {
          xPos = 6, yPos = 4, width = 6, height = 4
          widget = {
            title = "Responses by class (pushes and /predict)"
            xyChart = {
              dataSets = [{
                plotType = "STACKED_AREA"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = local.run_requests
                    aggregation = {
                      alignmentPeriod    = "60s"
                      perSeriesAligner   = "ALIGN_RATE"
                      crossSeriesReducer = "REDUCE_SUM"
                      groupByFields      = ["metric.label.response_code_class"]
                    }
                  }
                }
              }]
            }
          }
        },
        {
          xPos = 0, yPos = 8, width = 6, height = 4
          widget = {
            title = "Dead letters waiting"
            xyChart = {
              dataSets = [{
                plotType = "LINE"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = local.dlq_metric
                    aggregation = {
                      alignmentPeriod  = "60s"
                      perSeriesAligner = "ALIGN_MAX"
                    }
                  }
                }
              }]
            }
          }
        },
        {
          xPos = 6, yPos = 8, width = 6, height = 4
          widget = {
            title = "Request latency p50 / p99"
            xyChart = {
              dataSets = [
                {
                  plotType = "LINE"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = local.latency_metric
                      aggregation = {
                        alignmentPeriod    = "60s"
                        perSeriesAligner   = "ALIGN_DELTA"
                        crossSeriesReducer = "REDUCE_PERCENTILE_50"
                      }
                    }
                  }
                },
                {
                  plotType = "LINE"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = local.latency_metric
                      aggregation = {
                        alignmentPeriod    = "60s"
                        perSeriesAligner   = "ALIGN_DELTA"
                        crossSeriesReducer = "REDUCE_PERCENTILE_99"
                      }
                    }
                  }
                },
              ]
            }
          }
        },
      ]
    }
  })

  depends_on = [google_project_service.apis]
}
