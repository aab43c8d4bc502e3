"""Structural tests of terraform/: the resources and settings issue 9 asks for.

They read the .tf files with python-hcl2 (no provider, no registry) and check
what a plan would contain: who may do what, how notifications flow, what the
service is told, what the scripts can read back.
"""

from __future__ import annotations

import re

from conftest import TF_DIR, block

REQUIRED_OUTPUTS = {
    "project_id", "region", "input_bucket", "output_bucket", "image_uri", "service_name",
    "service_url", "topic", "dead_letter_topic", "dead_letter_subscription",
}
SERVICE_ENV = {
    "INPUT_BUCKET", "OUTPUT_BUCKET", "PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT", "MAX_CONCURRENT_JOBS",
    "LEASE_TTL_SECONDS", "LOG_FORMAT", "RUST_LOG", "GOOGLE_CLOUD_PROJECT",
}
OPTIONAL_ENV = {"MODEL_URI", "TRAINING_DATA_URI", "PREDICT_API_KEYS"}
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}
RUNTIME = "google_service_account.runtime"


def refs(value, target: str) -> bool:
    return target in str(value)


# --- versions, state, files ---------------------------------------------------------


def test_versions_pin_terraform_and_the_google_provider(tf):
    tfb = [t for t in tf.terraform if "required_version" in t]
    assert len(tfb) == 1 and tfb[0]["required_version"] == ">= 1.5"
    google = tfb[0]["required_providers"][0]["google"]
    assert google == {"source": "hashicorp/google", "version": "~> 6.50"}


def test_config_is_split_by_concern(tf):
    names = {f.name for f in tf.files}
    for expected in ("versions.tf", "variables.tf", "outputs.tf", "storage.tf", "pubsub.tf", "cloud_run.tf",
                     "iam.tf", "monitoring.tf", "apis.tf", "artifact_registry.tf"):
        assert expected in names
    assert "main.tf" not in names


def test_state_and_local_values_are_git_ignored():
    ignored = (TF_DIR / ".gitignore").read_text().split()
    for pattern in (".terraform/", "*.tfstate", "*.tfstate.*", "*.tfvars", "*.tfvars.json"):
        assert pattern in ignored
    assert not list(TF_DIR.glob("*.tfstate*")), "state files in the repository"
    example = (TF_DIR / "backend.tf.example").read_text()
    assert 'backend "gcs"' in example


def test_no_backend_or_credentials_in_the_config(tf):
    for t in tf.terraform:
        assert "backend" not in t, "a backend belongs in a git-ignored backend.tf (see backend.tf.example)"
    provider = tf.providers["google"]
    assert "credentials" not in provider and "access_token" not in provider
    for name, text in tf.text.items():
        assert "BEGIN PRIVATE KEY" not in text and '"private_key"' not in text, name


# --- buckets ----------------------------------------------------------------------------


def test_bucket_names_come_from_variables_with_a_project_derived_default(tf):
    assert tf.default("input_bucket_name") == "" and tf.default("output_bucket_name") == ""
    for bucket, var in (("input", "input_bucket_name"), ("output", "output_bucket_name")):
        expr = tf.locals[f"{bucket}_bucket"]
        assert f"var.{var}" in expr and "var.project_id" in expr
        assert tf.resource("google_storage_bucket", bucket)["name"] == f"${{local.{bucket}_bucket}}"


def test_buckets_are_private_uniform_and_recoverable(tf):
    for name in ("input", "output", "build_staging"):
        b = tf.resource("google_storage_bucket", name)
        assert b["uniform_bucket_level_access"] is True, name
        assert b["public_access_prevention"] == "enforced", name
    for name in ("input", "output"):
        b = tf.resource("google_storage_bucket", name)
        assert block(b, "versioning")["enabled"] is True
        assert block(b, "soft_delete_policy")["retention_duration_seconds"] >= 604800


def _rules(bucket: dict) -> list[dict]:
    rules = list(bucket.get("lifecycle_rule", []))
    for dyn in bucket.get("dynamic", []):
        if "lifecycle_rule" in dyn:
            rules.append(dict(block(dyn["lifecycle_rule"], "content"), __dynamic__=dyn["lifecycle_rule"]["for_each"]))
    return rules


def test_output_lifecycle_deletes_leases_and_old_outputs(tf):
    rules = _rules(tf.resource("google_storage_bucket", "output"))
    leases = [r for r in rules if block(r, "condition").get("matches_prefix") == ["_leases/"]]
    assert len(leases) == 1 and block(leases[0], "action")["type"] == "Delete"
    assert block(leases[0], "condition")["age"] == "${var.lease_retention_days}"
    assert tf.default("lease_retention_days") == 7

    aged = [r for r in rules if block(r, "condition").get("age") == "${lifecycle_rule.value}"]
    assert len(aged) == 1 and "var.output_retention_days > 0" in aged[0]["__dynamic__"], \
        "old outputs: an age rule that output_retention_days = 0 disables"
    assert block(aged[0], "action")["type"] == "Delete"
    assert tf.default("output_retention_days") == 90

    assert any(block(r, "action")["type"] == "AbortIncompleteMultipartUpload" for r in rules)
    assert any("days_since_noncurrent_time" in block(r, "condition") for r in rules)


def test_output_bucket_must_differ_from_input_bucket(tf):
    out = tf.resource("google_storage_bucket", "output")
    pre = block(block(out, "lifecycle"), "precondition")
    assert pre["condition"] == "${local.output_bucket != local.input_bucket}"


def test_notification_is_object_finalize_json_api_v1_on_the_input_bucket(tf):
    n = tf.resource("google_storage_notification", "input_finalize")
    assert n["event_types"] == ["OBJECT_FINALIZE"]
    assert n["payload_format"] == "JSON_API_V1"
    assert n["bucket"] == "${google_storage_bucket.input.name}"
    assert n["topic"] == "${google_pubsub_topic.input_events.id}"
    # the Cloud Storage service agent may publish before the notification is made
    assert "${google_pubsub_topic_iam_member.gcs_publishes_input_events}" in n["depends_on"]
    pub = tf.resource("google_pubsub_topic_iam_member", "gcs_publishes_input_events")
    assert pub["role"] == "roles/pubsub.publisher"
    assert pub["topic"] == "${google_pubsub_topic.input_events.id}"
    assert "data.google_storage_project_service_account.gcs" in pub["member"]


def test_no_notification_on_the_output_bucket(tf):
    for name, n in tf.resources.get("google_storage_notification", {}).items():
        assert "output" not in n["bucket"], name


# --- Pub/Sub --------------------------------------------------------------------------------


def test_push_subscription_authenticates_retries_and_dead_letters(tf):
    sub = tf.resource("google_pubsub_subscription", "push")
    assert sub["topic"] == "${google_pubsub_topic.input_events.id}"
    assert sub["ack_deadline_seconds"] == 600

    push = block(sub, "push_config")
    assert push["push_endpoint"] == "${google_cloud_run_v2_service.scorer.uri}/"
    oidc = block(push, "oidc_token")
    assert oidc["audience"] == "${var.push_audience}"
    assert oidc["service_account_email"] == "${google_service_account.push.email}"

    retry = block(sub, "retry_policy")
    assert retry["minimum_backoff"] == "${var.retry_minimum_backoff_seconds}s"
    assert retry["maximum_backoff"] == "${var.retry_maximum_backoff_seconds}s"
    assert tf.default("retry_minimum_backoff_seconds") == 10 and tf.default("retry_maximum_backoff_seconds") == 600

    dlq = block(sub, "dead_letter_policy")
    assert dlq["dead_letter_topic"] == "${google_pubsub_topic.dead_letters.id}"
    assert dlq["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    assert 20 <= tf.default("max_delivery_attempts") <= 100, "generous, 429s count as attempts"
    expiration = block(sub, "expiration_policy")
    assert expiration["ttl"] == ""


def test_max_delivery_attempts_is_explained(tf):
    text = tf.text["pubsub.tf"]
    comment = text[text.index("How max_delivery_attempts"):text.index("dead_letter_policy {")]
    assert "429" in comment and "hours" in comment


def test_pubsub_service_agent_can_dead_letter(tf):
    agent = tf.locals["pubsub_service_agent"]
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in agent and "data.google_project.this.number" in agent
    pub = tf.resource("google_pubsub_topic_iam_member", "pubsub_agent_publishes_dead_letters")
    assert pub["topic"] == "${google_pubsub_topic.dead_letters.id}"
    assert pub["role"] == "roles/pubsub.publisher" and pub["member"] == "${local.pubsub_service_agent}"
    ack = tf.resource("google_pubsub_subscription_iam_member", "pubsub_agent_acks_push")
    assert ack["subscription"] == "${google_pubsub_subscription.push.id}"
    assert ack["role"] == "roles/pubsub.subscriber" and ack["member"] == "${local.pubsub_service_agent}"


def test_dead_letters_are_kept_seven_days_in_a_pull_subscription_and_alerted(tf):
    sub = tf.resource("google_pubsub_subscription", "dead_letters")
    assert sub["topic"] == "${google_pubsub_topic.dead_letters.id}"
    assert "push_config" not in sub, "dead letters are pulled for inspection and redrive"
    assert sub["message_retention_duration"] == "604800s"
    alert = tf.resource("google_monitoring_alert_policy", "dead_letters")
    cond = block(block(alert, "conditions"), "condition_threshold")
    assert "num_undelivered_messages" in cond["filter"]
    assert "google_pubsub_subscription.dead_letters.name" in cond["filter"]
    assert cond["comparison"] == "COMPARISON_GT" and cond["threshold_value"] == 0


# --- image and service ---------------------------------------------------------------------


def test_artifact_registry_repository_for_the_image(tf):
    repo = tf.resource("google_artifact_registry_repository", "images")
    assert repo["format"] == "DOCKER" and repo["location"] == "${var.region}"
    assert "google_artifact_registry_repository.images" in tf.locals["image_uri"]


def _service(tf):
    return tf.resource("google_cloud_run_v2_service", "scorer")


def _container(tf):
    return block(block(_service(tf), "template"), "containers")


def test_service_settings_come_from_variables(tf):
    svc = _service(tf)
    tmpl = block(svc, "template")
    limits = block(_container(tf), "resources")["limits"]
    assert limits == {"cpu": "${var.cpu}", "memory": "${var.memory}"}
    assert tmpl["max_instance_request_concurrency"] == "${var.container_concurrency}"
    assert tmpl["timeout"] == "${var.request_timeout_seconds}s"
    scaling = block(tmpl, "scaling")
    assert scaling == {"min_instance_count": "${var.min_instances}", "max_instance_count": "${var.max_instances}"}
    assert _container(tf)["image"] == "${local.image_uri}:${var.image_tag}"
    defaults = {v: tf.default(v) for v in ("cpu", "memory", "container_concurrency", "request_timeout_seconds",
                                           "min_instances", "max_instances")}
    assert defaults == {"cpu": "2", "memory": "1Gi", "container_concurrency": 16, "request_timeout_seconds": 600,
                        "min_instances": 0, "max_instances": 10}


def test_request_timeout_matches_the_ack_deadline(tf):
    sub = tf.resource("google_pubsub_subscription", "push")
    assert tf.default("request_timeout_seconds") == sub["ack_deadline_seconds"] == 600


def test_service_is_not_public_and_accepts_the_push_audience(tf):
    svc = _service(tf)
    assert svc.get("invoker_iam_disabled", False) is False
    assert svc["custom_audiences"] == ["${var.push_audience}"]
    assert block(svc, "template")["service_account"] == f"${{{RUNTIME}.email}}"


def _env(tf) -> dict[str, dict]:
    container = _container(tf)
    env = {e["name"]: e for e in container.get("env", [])}
    for dyn in container.get("dynamic", []):
        if "env" in dyn:
            content = block(dyn["env"], "content")
            env[content["name"]] = dict(content, __dynamic__=dyn["env"]["for_each"])
    return env


def test_service_environment(tf):
    env = _env(tf)
    assert SERVICE_ENV | OPTIONAL_ENV == set(env), f"unexpected or missing: {set(env) ^ (SERVICE_ENV | OPTIONAL_ENV)}"
    assert env["INPUT_BUCKET"]["value"] == "${google_storage_bucket.input.name}"
    assert env["OUTPUT_BUCKET"]["value"] == "${google_storage_bucket.output.name}"
    assert env["PUSH_AUDIENCE"]["value"] == "${var.push_audience}"
    assert env["PUSH_SERVICE_ACCOUNT"]["value"] == "${google_service_account.push.email}"
    assert env["MAX_CONCURRENT_JOBS"]["value"] == "${tostring(var.max_concurrent_jobs)}"
    assert env["LOG_FORMAT"]["value"] == "json"
    assert env["RUST_LOG"]["value"] == "${var.log_level}"
    assert env["LEASE_TTL_SECONDS"]["value"] == "${tostring(var.lease_ttl_seconds)}"
    assert "PORT" not in env, "Cloud Run sets PORT itself"
    for name in OPTIONAL_ENV:
        assert "__dynamic__" in env[name], f"{name} is set only when configured"
    secret = block(block(env["PREDICT_API_KEYS"], "value_source"), "secret_key_ref")
    assert secret["version"] == "latest"
    assert tf.default("predict_api_keys_secret") == "" and tf.default("model_uri") == ""


def test_probes(tf):
    c = _container(tf)
    assert block(block(c, "startup_probe"), "http_get")["path"] == "/ready"
    assert block(block(c, "liveness_probe"), "http_get")["path"] == "/health"
    assert block(c, "ports")["container_port"] == 8080


def test_terraform_leaves_deployed_images_and_traffic_to_deploy_sh(tf):
    lc = block(_service(tf), "lifecycle")
    ignored = {str(x).strip("${}") for x in lc["ignore_changes"]}
    assert {"template[0].containers[0].image", "traffic"} <= ignored


# --- IAM --------------------------------------------------------------------------------------


def _iam(tf):
    for rtype, name, body in tf.all_resources():
        if rtype.endswith(("_iam_member", "_iam_binding", "_iam_policy")):
            yield rtype, name, body


def test_no_primitive_roles_and_no_public_members(tf):
    for rtype, name, body in _iam(tf):
        assert not rtype.endswith("_iam_policy"), f"{rtype}.{name}: authoritative policies clobber other grants"
        assert body.get("role") not in PRIMITIVE_ROLES, f"{rtype}.{name}"
        members = body.get("members", []) + [body.get("member", "")]
        for m in members:
            assert not any(p in str(m) for p in PUBLIC_MEMBERS), f"{rtype}.{name}: {m}"
    for name, text in tf.text.items():
        for role in PRIMITIVE_ROLES:
            assert f'"{role}"' not in text, name
        for line in text.splitlines():
            if re.match(r"\s*members?\s*=", line):
                assert not any(p in line for p in PUBLIC_MEMBERS), f"{name}: {line.strip()}"


def test_runtime_account_holds_exactly_its_bucket_roles(tf):
    grants = set()
    for rtype, name, body in _iam(tf):
        if RUNTIME in str(body.get("member", "")) + str(body.get("members", "")):
            target = body.get("bucket") or body.get("secret_id") or body.get("project") or body.get("service_account_id")
            grants.add((rtype, name, target, body["role"]))
    assert grants == {
        ("google_storage_bucket_iam_member", "runtime_reads_input", "${google_storage_bucket.input.name}",
         "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", "runtime_reads_output", "${google_storage_bucket.output.name}",
         "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", "runtime_creates_output", "${google_storage_bucket.output.name}",
         "roles/storage.objectCreator"),
        ("google_storage_bucket_iam_member", "runtime_reads_model", "${each.key}", "roles/storage.objectViewer"),
        ("google_secret_manager_secret_iam_member", "runtime_reads_api_keys", "${var.predict_api_keys_secret}",
         "roles/secretmanager.secretAccessor"),
    }
    model = tf.resource("google_storage_bucket_iam_member", "runtime_reads_model")
    assert model["for_each"] == "${local.model_buckets}"
    secret = tf.resource("google_secret_manager_secret_iam_member", "runtime_reads_api_keys")
    assert secret["count"] == '${var.predict_api_keys_secret != "" ? 1 : 0}'


def test_runtime_account_has_no_project_level_role(tf):
    for name, body in tf.resources.get("google_project_iam_member", {}).items():
        assert RUNTIME not in body["member"], name
        assert "storage" not in body["role"], f"{name}: project-level storage role"


def test_invokers_are_the_push_account_and_the_optional_predict_list(tf):
    invokers = {name: body for name, body in tf.resources["google_cloud_run_v2_service_iam_member"].items()
                if body["role"] == "roles/run.invoker"}
    assert set(invokers) == {"push_invoker", "predict_invokers"}
    assert invokers["push_invoker"]["member"] == "${google_service_account.push.member}"
    assert invokers["predict_invokers"]["for_each"] == "${toset(var.predict_invokers)}"
    assert tf.default("predict_invokers") == []
    validation = block(tf.variables["predict_invokers"], "validation")
    assert "allUsers" in validation["error_message"]


def test_dedicated_service_accounts(tf):
    accounts = tf.resources["google_service_account"]
    assert {"runtime", "push", "builder"} <= set(accounts)
    assert accounts["runtime"]["account_id"] != accounts["push"]["account_id"]


# --- monitoring ---------------------------------------------------------------------------------


def test_slos_with_burn_rate_alerts(tf):
    avail = tf.resource("google_monitoring_slo", "push_availability")
    ratio = block(block(avail, "request_based_sli"), "good_total_ratio")
    assert "run.googleapis.com/request_count" in tf.locals["run_requests"]
    assert 'response_code_class="2xx"' in ratio["good_service_filter"]
    assert 'response_code_class="5xx"' in ratio["bad_service_filter"]
    assert avail["goal"] == "${var.availability_slo_goal}" and tf.default("availability_slo_goal") == 0.995

    lat = tf.resource("google_monitoring_slo", "file_latency")
    cut = block(block(lat, "request_based_sli"), "distribution_cut")
    assert "google_logging_metric.job_duration.name" in cut["distribution_filter"]
    assert block(cut, "range")["max"] == "${var.file_latency_budget_ms}"
    assert lat["goal"] == "${var.latency_slo_goal}" and tf.default("latency_slo_goal") == 0.99

    burn = tf.resource("google_monitoring_alert_policy", "slo_burn")
    slos = str(burn["for_each"])
    assert "google_monitoring_slo.push_availability.name" in slos and "google_monitoring_slo.file_latency.name" in slos
    filters = [block(c, "condition_threshold")["filter"] for c in burn["conditions"]]
    assert len(filters) == 2 and all("select_slo_burn_rate" in f for f in filters)


def test_log_based_metrics_for_jobs_and_rows(tf):
    summary = tf.locals["job_summary_filter"]
    assert "job summary" in summary and "cloud_run_revision" in summary
    jobs = tf.resource("google_logging_metric", "jobs")
    assert jobs["label_extractors"] == {"outcome": "EXTRACT(jsonPayload.outcome)"}
    rows = tf.resource("google_logging_metric", "rows_scored")
    assert rows["value_extractor"] == "EXTRACT(jsonPayload.rows_scored)"
    failed = tf.resource("google_monitoring_alert_policy", "failed_files")
    assert 'outcome="failed"' in block(block(failed, "conditions"), "condition_threshold")["filter"]
    tf.resource("google_monitoring_dashboard", "scorer")


def test_latency_budget_is_a_histogram_bound(tf):
    bounds = block(block(tf.resource("google_logging_metric", "job_duration"), "bucket_options"),
                   "explicit_buckets")["bounds"]
    assert tf.default("file_latency_budget_ms") in bounds
    allowed = re.findall(r"\d+", block(tf.variables["file_latency_budget_ms"], "validation")["condition"])
    assert {int(a) for a in allowed} <= set(bounds)


# --- APIs and outputs --------------------------------------------------------------------------


def test_required_apis_are_enabled(tf):
    svc = tf.resource("google_project_service", "apis")
    assert svc["for_each"] == "${toset(local.apis)}"
    apis = str(tf.locals["apis"])
    for api in ("run", "pubsub", "storage", "artifactregistry", "cloudbuild", "monitoring", "logging", "iam"):
        assert f"{api}.googleapis.com" in apis
    assert svc["disable_on_destroy"] is False


def test_outputs_used_by_the_scripts(tf):
    assert REQUIRED_OUTPUTS <= set(tf.outputs)
    assert tf.outputs["image_uri"]["value"] == "${local.image_uri}"
    assert tf.outputs["service_url"]["value"] == "${google_cloud_run_v2_service.scorer.uri}"
    assert tf.outputs["dead_letter_subscription"]["value"] == "${google_pubsub_subscription.dead_letters.id}"


def test_github_deployment_is_keyless_and_scoped(tf):
    cond = tf.resource("google_iam_workload_identity_pool_provider", "github")["attribute_condition"]
    assert "assertion.sub" in cond and "repo:${var.github_repository}:ref:refs/heads/main" in cond
    assert not tf.resources.get("google_service_account_key"), "no long-lived keys"
    dev = tf.resource("google_cloud_run_v2_service_iam_member", "deployer_develops_service")
    assert dev["role"] == "roles/run.developer"
