locals {
  # Default bucket names carry the service name, so a second deployment with
  # another service_name in the same project gets its own buckets.
  input_bucket    = var.input_bucket_name != "" ? var.input_bucket_name : "${var.project_id}-${var.service_name}-input"
  output_bucket   = var.output_bucket_name != "" ? var.output_bucket_name : "${var.project_id}-${var.service_name}-output"
  build_bucket    = "${var.project_id}-${var.service_name}-build"
  bucket_location = var.bucket_location != "" ? upper(var.bucket_location) : upper(var.region)

  # The two Cloud Run services run the same image: "push" takes the Pub/Sub
  # pushes (POST /), "predict" answers the online API (POST /predict).
  push_service_name    = var.service_name
  predict_service_name = "${var.service_name}-predict"

  # <region>-docker.pkg.dev/<project>/<repository>/<image>; the scripts add ":<git commit>"
  image_uri = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/${var.image_name}"

  # Pub/Sub's service agent (service-<number>@gcp-sa-pubsub...), made sure to
  # exist by Terraform (iam.tf), not by a `gcloud beta` call.
  pubsub_service_agent = google_project_service_identity.pubsub.member

  # Buckets named by MODEL_URI / TRAINING_DATA_URI.
  model_uri_buckets = toset([for u in [var.model_uri, var.training_data_uri] : regex("^gs://([^/]+)/", u)[0] if u != ""])
  # ... that the push runtime must read besides the input and output buckets
  # (which it reads already).
  model_buckets = setsubtract(local.model_uri_buckets, [local.input_bucket, local.output_bucket])

  # Logs: every input object generation ends in exactly one entry like this,
  # from the push service, or, for an input scored by the shard job, from
  # the task that committed it.
  job_summary_sources = merge(
    { cloud_run_revision = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.push_service_name}\"" },
    var.shard_job_enabled ? { cloud_run_job = "resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"${local.shard_job_name}\"" } : {},
  )
  job_summary_filter = join(" AND ", [
    "(${join(" OR ", [for source in values(local.job_summary_sources) : "(${source})"])})",
    "jsonPayload.message=\"job summary\"",
  ])

  notification_channels = concat(
    var.notification_channels,
    [for c in google_monitoring_notification_channel.email : c.id],
  )
}
