locals {
  input_bucket    = var.input_bucket_name != "" ? var.input_bucket_name : "${var.project_id}-scorer-input"
  output_bucket   = var.output_bucket_name != "" ? var.output_bucket_name : "${var.project_id}-scorer-output"
  build_bucket    = "${var.project_id}-${var.service_name}-build"
  bucket_location = var.bucket_location != "" ? upper(var.bucket_location) : upper(var.region)

  # <region>-docker.pkg.dev/<project>/<repository>/<image>; the scripts add ":<git commit>"
  image_uri = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/${var.image_name}"

  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Buckets named by MODEL_URI / TRAINING_DATA_URI that the service must read
  # (the input and output buckets are readable already).
  model_buckets = setsubtract(
    toset([for u in [var.model_uri, var.training_data_uri] : regex("^gs://([^/]+)/", u)[0] if u != ""]),
    [local.input_bucket, local.output_bucket],
  )

  # Logs: every input object generation ends in exactly one entry like this.
  job_summary_filter = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${var.service_name}\"",
    "jsonPayload.message=\"job summary\"",
  ])

  notification_channels = concat(
    var.notification_channels,
    [for c in google_monitoring_notification_channel.email : c.id],
  )
}
