# Addresses that changed. Each moved block tells Terraform that what the state
# holds at `from` is now at `to`, so an existing deployment is renamed in the
# state instead of being destroyed and created again. Keep them: a state
# written before the change may be applied at any time.

# --- Cloud Run services (cloud_run.tf) ----------------------------------------

# The push service was named "scorer" when one service did everything; then
# each service had a resource of its own, before both came from local.services.
moved {
  from = google_cloud_run_v2_service.scorer
  to   = google_cloud_run_v2_service.push
}

moved {
  from = google_cloud_run_v2_service.push
  to   = google_cloud_run_v2_service.services["push"]
}

moved {
  from = google_cloud_run_v2_service.predict
  to   = google_cloud_run_v2_service.services["predict"]
}

# --- SLOs (monitoring.tf): one resource each, before local.slos -----------------

moved {
  from = google_monitoring_slo.push_availability
  to   = google_monitoring_slo.slos["push-availability"]
}

moved {
  from = google_monitoring_slo.file_latency
  to   = google_monitoring_slo.slos["file-latency"]
}

moved {
  from = google_monitoring_slo.predict_availability
  to   = google_monitoring_slo.slos["predict-availability"]
}

moved {
  from = google_monitoring_slo.predict_latency
  to   = google_monitoring_slo.slos["predict-latency"]
}

# --- the GitHub deployer's grants (github.tf): one resource each, before
# for_each over the services and their accounts ---------------------------------

moved {
  from = google_cloud_run_v2_service_iam_member.deployer_develops_service[0]
  to   = google_cloud_run_v2_service_iam_member.deployer_develops["push"]
}

moved {
  from = google_cloud_run_v2_service_iam_member.deployer_develops_predict[0]
  to   = google_cloud_run_v2_service_iam_member.deployer_develops["predict"]
}

moved {
  from = google_service_account_iam_member.deployer_acts_as_runtime[0]
  to   = google_service_account_iam_member.deployer_acts_as["runtime"]
}

moved {
  from = google_service_account_iam_member.deployer_acts_as_predict[0]
  to   = google_service_account_iam_member.deployer_acts_as["predict"]
}

# --- the Pub/Sub path (pubsub.tf, storage.tf, iam.tf, monitoring.tf) ------------
#
# Its resources gained `count = local.pubsub_enabled` (var.trigger). No moved
# block is needed: Terraform itself moves google_x.y to google_x.y[0] when a
# resource gains a count, so an existing deployment keeps them
# (tests/infra/test_eventarc.py checks this with the real terraform).
