# Log-based metrics, SLOs with burn-rate alerts, the dead-letter alert and a
# dashboard. Everything here reads what the services already emit: Cloud Run's
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
  # Files scored inline only (the file-latency SLO's): the shard job's
  # summaries carry no duration_ms.
  filter = "${local.job_summary_sources["cloud_run_revision"]} AND jsonPayload.message=\"job summary\" AND jsonPayload.outcome=\"scored\""

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

# A task of the shard job whose last attempt failed reports its input as
# failed (its manifest says why), logging this ERROR first.
resource "google_logging_metric" "shard_task_failures" {
  count = local.shard_enabled

  name        = "${var.service_name}_shard_task_failures"
  description = "Tasks of the shard job that failed on their last attempt (each reports its input as failed)."
  filter = join(" AND ", [
    "resource.type=\"cloud_run_job\"",
    "resource.labels.job_name=\"${local.shard_job_name}\"",
    "severity=ERROR",
    "jsonPayload.message=\"task failed on its last attempt; reporting the input as failed\"",
  ])

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "scorer shard tasks failed on their last attempt"
  }

  depends_on = [google_project_service.apis]
}

# --- the metrics reach Cloud Monitoring minutes after they exist ---------------

# Cloud Monitoring answers 404 "Cannot find metric(s) ... it could take up to
# 10 minutes to become available" to an SLO or alert policy that names a
# log-based metric created moments before (a known provider issue). Whatever
# reads a log-based metric takes its name from this pause's triggers, so
# Terraform creates it only after the pause; the pause runs on the apply that
# creates (or renames) the metrics, never again. setup.sh also retries that
# 404 with a bounded backoff, for the rare project where it lasts longer.
resource "time_sleep" "log_metrics" {
  create_duration = "${var.log_metric_propagation_seconds}s"

  triggers = merge(
    {
      jobs         = google_logging_metric.jobs.name
      rows_scored  = google_logging_metric.rows_scored.name
      job_duration = google_logging_metric.job_duration.name
    },
    var.shard_job_enabled ? { shard_task_failures = one(google_logging_metric.shard_task_failures[*].name) } : {},
  )
}

locals {
  # The only way to name a log-based metric below: through the pause.
  metric_jobs                = "logging.googleapis.com/user/${time_sleep.log_metrics.triggers["jobs"]}"
  metric_rows_scored         = time_sleep.log_metrics.triggers["rows_scored"]
  metric_job_duration        = "logging.googleapis.com/user/${time_sleep.log_metrics.triggers["job_duration"]}"
  metric_shard_task_failures = "logging.googleapis.com/user/${lookup(time_sleep.log_metrics.triggers, "shard_task_failures", "")}"
}

# --- SLOs ----------------------------------------------------------------------

resource "google_monitoring_custom_service" "scorer" {
  service_id   = local.push_service_name
  display_name = "scorer push (Cloud Storage -> Pub/Sub -> Cloud Run ${local.push_service_name})"

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_custom_service" "predict" {
  service_id   = local.predict_service_name
  display_name = "scorer online predictions (Cloud Run ${local.predict_service_name})"

  depends_on = [google_project_service.apis]
}

locals {
  run_request_count = join(" AND ", [
    "metric.type=\"run.googleapis.com/request_count\"",
    "resource.type=\"cloud_run_revision\"",
  ])
  # Requests of one service each: the push service sees only pushes, the
  # predict service only online predictions.
  run_requests     = "${local.run_request_count} AND resource.labels.service_name=\"${local.push_service_name}\""
  predict_requests = "${local.run_request_count} AND resource.labels.service_name=\"${local.predict_service_name}\""
  scored_files     = "metric.type=\"${local.metric_jobs}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.outcome=\"scored\""
}

# One entry per SLO (each over 28 days):
#   title     what is counted as good (with the goal, the SLO's display name;
#             in lower case, what its alerts call it)
#   requests  an availability SLO: these requests answered 2xx among 2xx + 5xx
#   latency   a latency SLO: the values of this distribution up to max
#   events    what the burn-rate alerts' minimum of events counts (below)
#   look      where the alerts send their reader first
locals {
  slos = {
    # Availability: 99.5 % of pushes answered 2xx. Good = 2xx, bad = 5xx, and the
    # 4xx are left out on purpose: a 429 is Cloud Run's "no free instance" during
    # a burst (Pub/Sub retries it, and a file that keeps getting it ends on the
    # dead-letter topic, which alerts separately); 400/401 are malformed or
    # unauthenticated callers, not unavailability.
    push-availability = {
      service  = google_monitoring_custom_service.scorer.service_id
      title    = "Pushes answered 2xx"
      goal     = var.availability_slo_goal
      requests = local.run_requests
      events   = local.run_requests
      look     = "5xx answers of the ${local.push_service_name} service and its job summaries"
    }
    # Latency: 99 % of files scored within their budget (job duration from the
    # push's arrival to the committed manifest, from the job summaries).
    file-latency = {
      service = google_monitoring_custom_service.scorer.service_id
      title   = "Files scored within ${var.file_latency_budget_ms / 1000} s"
      goal    = var.latency_slo_goal
      latency = {
        filter = join(" AND ", [
          "metric.type=\"${local.metric_job_duration}\"",
          "resource.type=\"cloud_run_revision\"",
        ])
        max = var.file_latency_budget_ms
      }
      events = local.scored_files
      look   = "job summaries with a large duration_ms (resource.labels.service_name=\"${local.push_service_name}\" jsonPayload.message=\"job summary\")"
    }
    # Online predictions: answered 2xx (among 2xx + 5xx; a 400 is a caller's bad
    # flight, a 401/403 a caller without rights) ...
    predict-availability = {
      service  = google_monitoring_custom_service.predict.service_id
      title    = "Predictions answered 2xx"
      goal     = var.predict_availability_slo_goal
      requests = local.predict_requests
      events   = local.predict_requests
      look     = "5xx answers of the ${local.predict_service_name} service"
    }
    # ... and fast (Cloud Run's request latency, every response class).
    predict-latency = {
      service = google_monitoring_custom_service.predict.service_id
      title   = "Predictions within ${var.predict_latency_threshold_ms} ms"
      goal    = var.predict_latency_slo_goal
      latency = {
        filter = join(" AND ", [
          "metric.type=\"run.googleapis.com/request_latencies\"",
          "resource.type=\"cloud_run_revision\"",
          "resource.labels.service_name=\"${local.predict_service_name}\"",
        ])
        max = var.predict_latency_threshold_ms
      }
      events = local.predict_requests
      look   = "request latencies and instance counts of the ${local.predict_service_name} service"
    }
  }
}

resource "google_monitoring_slo" "slos" {
  for_each = local.slos

  service             = each.value.service
  slo_id              = each.key
  display_name        = "${each.value.title} (${format("%.1f", each.value.goal * 100)} %, 28 days)"
  goal                = each.value.goal
  rolling_period_days = 28

  request_based_sli {
    dynamic "good_total_ratio" {
      for_each = can(each.value.requests) ? [each.value.requests] : []
      content {
        good_service_filter = "${good_total_ratio.value} AND metric.labels.response_code_class=\"2xx\""
        bad_service_filter  = "${good_total_ratio.value} AND metric.labels.response_code_class=\"5xx\""
      }
    }

    dynamic "distribution_cut" {
      for_each = can(each.value.latency) ? [each.value.latency] : []
      content {
        distribution_filter = distribution_cut.value.filter
        range {
          max = distribution_cut.value.max
        }
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

# Multi-window, multi-burn-rate alerts on each SLO (the SRE workbook's
# pattern, 28-day budget). Each alert ANDs three conditions:
#   - the long window burns the budget at the rate (14.4x over 1 h spends 2 %
#     of the budget in an hour: page; 6x over 6 h spends 5 % in six hours:
#     ticket),
#   - the short window (1/12 of the long one: 5 min, 30 min) burns at the same
#     rate, so the alert stops soon after the burning stops and a burst that
#     is already over does not fire,
#   - the long window holds at least slo_alert_min_events events (requests,
#     or scored files for the file-latency SLO), so a trickle cannot page:
#     one slow file out of three is a 33 % error rate, but not an incident.
locals {
  burn_windows = {
    fast = { long = 3600, short = 300, rate = 14.4, severity = "CRITICAL", kind = "page" }
    slow = { long = 21600, short = 1800, rate = 6, severity = "WARNING", kind = "ticket" }
  }

  # Each SLO with each window: "push-availability-fast", ...
  burn_alerts = merge([
    for name, slo in local.slos : {
      for window, burn in local.burn_windows : "${name}-${window}" => merge(slo, burn, {
        name = name
        slo  = google_monitoring_slo.slos[name].name
        what = lower(slo.title)
      })
    }
  ]...)
}

resource "google_monitoring_alert_policy" "slo_burn" {
  for_each = local.burn_alerts

  display_name          = "scorer: ${each.value.name} SLO burning its error budget (${each.value.kind})"
  combiner              = "AND"
  severity              = each.value.severity
  notification_channels = local.notification_channels

  conditions {
    display_name = "burn rate over ${each.value.long / 3600} h above ${each.value.rate}x"
    condition_threshold {
      filter          = "select_slo_burn_rate(\"${each.value.slo}\", \"${each.value.long}s\")"
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.rate
      duration        = "0s"
    }
  }

  conditions {
    display_name = "burn rate over ${each.value.short / 60} min above ${each.value.rate}x"
    condition_threshold {
      filter          = "select_slo_burn_rate(\"${each.value.slo}\", \"${each.value.short}s\")"
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.rate
      duration        = "0s"
    }
  }

  conditions {
    display_name = "at least ${var.slo_alert_min_events} events in ${each.value.long / 3600} h"
    condition_threshold {
      filter = each.value.events
      # counts are whole numbers: more than N - 1 is at least N
      comparison      = "COMPARISON_GT"
      threshold_value = var.slo_alert_min_events - 1
      duration        = "0s"
      aggregations {
        alignment_period     = "${each.value.long}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      The scorer's SLO "${each.value.what}" is spending its 28-day error budget
      ${each.value.rate} times too fast, over the last ${each.value.long / 3600} h and the last
      ${each.value.short / 60} min, with at least ${var.slo_alert_min_events} events.
      Look at the ${each.value.look}. A bad release is undone with `./deploy.sh --rollback`.
    EOT
  }
}

# (trigger = "pubsub" only: Eventarc's subscription has no dead-letter topic)
resource "google_monitoring_alert_policy" "dead_letters" {
  count = local.pubsub_enabled

  display_name          = "scorer: dead-lettered notifications waiting"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${google_pubsub_subscription.dead_letters[0].name} holds messages"
    condition_threshold {
      filter = join(" AND ", [
        "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\"",
        "resource.type=\"pubsub_subscription\"",
        "resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letters[0].name}\"",
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
      `${google_pubsub_subscription.dead_letters[0].id}` (kept 7 days).
      Inspect: `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letters[0].id} --limit 10`
      (without --auto-ack). Once the cause is fixed, send them back:
      `scorer redrive --subscription ${google_pubsub_subscription.dead_letters[0].id} --topic ${google_pubsub_topic.input_events[0].id}`.
    EOT
  }
}

# What counts as a failed file, one condition each (any of them fires the
# alert): a failed job summary from the push service or, for a large input,
# from the shard job's task that committed it; and a shard task that failed
# on its last attempt (it reports its input as failed; counted even when
# that report could not be written).
locals {
  failed_file_conditions = merge(
    { for type in keys(local.job_summary_sources) : type => {
      title = "job summaries with outcome=failed (${type})"
      filter = join(" AND ", [
        "metric.type=\"${local.metric_jobs}\"",
        "resource.type=\"${type}\"",
        "metric.labels.outcome=\"failed\"",
      ])
    } },
    var.shard_job_enabled ? { last_attempt = {
      title  = "shard tasks failed on their last attempt"
      filter = "metric.type=\"${local.metric_shard_task_failures}\" AND resource.type=\"cloud_run_job\""
    } } : {},
  )
}

resource "google_monitoring_alert_policy" "failed_files" {
  display_name          = "scorer: input files failed"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  dynamic "conditions" {
    for_each = local.failed_file_conditions
    content {
      display_name = conditions.value.title
      condition_threshold {
        filter          = conditions.value.filter
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
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      At least one input file could not be scored. Its errors.csv and manifest.json
      are in the output bucket under `<input object>/<generation>/`; the job summary says why:
      `(${join(" OR ", [for source in values(local.job_summary_sources) : "(${source})"])}) jsonPayload.message="job summary" jsonPayload.outcome="failed"`
      %{if var.shard_job_enabled~}
      A task of the shard job that failed on its last attempt logs, with its error, first:
      `resource.type="cloud_run_job" resource.labels.job_name="${local.shard_job_name}" severity=ERROR`
      %{endif~}
    EOT
  }
}

# --- dashboard ---------------------------------------------------------------------

locals {
  jobs_metric            = "metric.type=\"${local.metric_jobs}\" resource.type=\"cloud_run_revision\""
  dlq_metric             = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.labels.subscription_id=\"${join("", google_pubsub_subscription.dead_letters[*].name)}\""
  latency_metric         = "metric.type=\"run.googleapis.com/request_latencies\" resource.type=\"cloud_run_revision\" resource.labels.service_name=\"${local.push_service_name}\""
  predict_latency_metric = "metric.type=\"run.googleapis.com/request_latencies\" resource.type=\"cloud_run_revision\" resource.labels.service_name=\"${local.predict_service_name}\""

  # How a chart's series are aligned (period, per-series aligner) and
  # combined (cross-series reducer, grouped by some fields).
  sum_per_5min   = { period = "300s", aligner = "ALIGN_SUM", reducer = "REDUCE_SUM" }
  rate_by_class  = { period = "60s", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["metric.label.response_code_class"] }
  p50_and_p99    = [for p in [50, 99] : { period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_${p}" }]
  max_per_minute = { period = "60s", aligner = "ALIGN_MAX" }

  # The dashboard's charts, two a row, each with its series: a metric filter
  # and its alignment, or a PromQL query; a chart with `only = false` is left
  # out (the dead letters: trigger = "eventarc" has none).
  dashboard_charts = [for chart in [
    {
      title  = "Files by outcome (per 5 min)"
      plot   = "STACKED_BAR"
      series = [merge(local.sum_per_5min, { filter = local.jobs_metric, group_by = ["metric.label.outcome"] })]
    },
    {
      title  = "Rows scored (per 5 min)"
      plot   = "STACKED_BAR"
      series = [{ promql = "sum(increase(logging_googleapis_com:user_${local.metric_rows_scored}_sum{monitored_resource=\"cloud_run_revision\"}[5m]))" }]
    },
    {
      title  = "Failed files (per 5 min)"
      plot   = "STACKED_BAR"
      series = [merge(local.sum_per_5min, { filter = "${local.jobs_metric} metric.label.outcome=\"failed\"" })]
    },
    {
      title  = "Push responses by class"
      plot   = "STACKED_AREA"
      series = [merge(local.rate_by_class, { filter = local.run_requests })]
    },
    {
      title  = "Dead letters waiting"
      plot   = "LINE"
      series = [merge(local.max_per_minute, { filter = local.dlq_metric })]
      only   = var.trigger == "pubsub"
    },
    {
      title  = "Push request latency p50 / p99"
      plot   = "LINE"
      series = [for s in local.p50_and_p99 : merge(s, { filter = local.latency_metric })]
    },
    {
      title  = "Predict responses by class"
      plot   = "STACKED_AREA"
      series = [merge(local.rate_by_class, { filter = local.predict_requests })]
    },
    {
      title  = "Predict latency p50 / p99"
      plot   = "LINE"
      series = [for s in local.p50_and_p99 : merge(s, { filter = local.predict_latency_metric })]
    },
  ] : chart if try(chart.only, true)]
}

resource "google_monitoring_dashboard" "scorer" {
  dashboard_json = jsonencode({
    displayName = "scorer"
    mosaicLayout = {
      columns = 12
      tiles = [for i, chart in local.dashboard_charts : {
        xPos = i % 2 * 6, yPos = floor(i / 2) * 4, width = 6, height = 4
        widget = {
          title = chart.title
          xyChart = {
            dataSets = [for s in chart.series : {
              plotType = chart.plot
              # only the fields the series has (jsonencode would write nulls)
              timeSeriesQuery = { for k, v in {
                prometheusQuery = try(s.promql, null)
                timeSeriesFilter = can(s.filter) ? {
                  filter = s.filter
                  aggregation = { for k, v in {
                    alignmentPeriod    = s.period
                    perSeriesAligner   = s.aligner
                    crossSeriesReducer = try(s.reducer, null)
                    groupByFields      = try(s.group_by, null)
                  } : k => v if v != null }
                } : null
              } : k => v if v != null }
            }]
          }
        }
      }]
    }
  })

  depends_on = [google_project_service.apis]
}
