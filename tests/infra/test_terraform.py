"""Structural tests of terraform/: the resources and settings issue 9 asks for.

They read the .tf files with python-hcl2 (no provider, no registry) and check
what a plan would contain: who may do what, how notifications flow, what the
service is told, what the scripts can read back.
"""

from __future__ import annotations

import re

from conftest import ROOT, TF_DIR, block

REQUIRED_OUTPUTS = {
    "project_id", "region", "input_bucket", "output_bucket", "image_uri", "push_service_name",
    "push_service_url", "predict_service_name", "predict_service_url", "topic", "dead_letter_topic",
    "dead_letter_subscription", "push_request_timeout_seconds", "alert_notification_channels",
    "build_service_account", "build_bucket",
}
COMMON_ENV = {"OUTPUT_BUCKET", "LOG_FORMAT", "RUST_LOG", "GOOGLE_CLOUD_PROJECT", "SERVICE_ROLE"}
PUSH_ENV = COMMON_ENV | {"INPUT_BUCKET", "PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT", "MAX_CONCURRENT_JOBS",
                         "LEASE_TTL_SECONDS"}
# with shard_job_enabled (test_shard_job.py: absent without it)
SHARD_ENV = {"SHARD_JOB", "SHARD_BYTES", "MAX_TASKS", "SHARD_MAX_RETRIES", "DISPATCH_STALE_SECONDS"}
# with bigquery_enabled, results_topic_enabled (test_bigquery_results.py)
LOAD_ENV = {"BIGQUERY_TABLE", "BIGQUERY_LOCATION", "OUTPUT_FORMAT", "RESULTS_TOPIC"}
# the model registry (test_model_registry.py): both services, only when set
# but MODEL_REFRESH_SECONDS; fit on upload the push service only
MODEL_ENV = {"MODEL", "MODEL_ROUTES", "MODEL_REFRESH_SECONDS"}
FIT_ENV = {"TRAINING_PREFIX", "PROMOTE"}
PREDICT_ENV = COMMON_ENV | {"MODEL_REFRESH_SECONDS"}
OPTIONAL_ENV = {"MODEL_URI", "TRAINING_DATA_URI", "MODEL", "MODEL_ROUTES"}
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


def test_bucket_names_come_from_variables_with_a_project_and_service_derived_default(tf):
    """Issue 18, defect 9: a second deployment (another service_name) in the same
    project gets its own buckets."""
    assert tf.default("input_bucket_name") == "" and tf.default("output_bucket_name") == ""
    for bucket, var in (("input", "input_bucket_name"), ("output", "output_bucket_name")):
        expr = tf.locals[f"{bucket}_bucket"]
        assert f"var.{var}" in expr and "${var.project_id}-${var.service_name}-" + bucket in expr
        assert tf.resource("google_storage_bucket", bucket)["name"] == f"${{local.{bucket}_bucket}}"


def test_buckets_are_private_and_uniform(tf):
    for name in ("input", "output", "build_staging"):
        b = tf.resource("google_storage_bucket", name)
        assert b["uniform_bucket_level_access"] is True, name
        assert b["public_access_prevention"] == "enforced", name


def test_outputs_are_recoverable(tf):
    b = tf.resource("google_storage_bucket", "output")
    assert block(b, "versioning")["enabled"] is True
    assert block(b, "soft_delete_policy")["retention_duration_seconds"] >= 604800


def test_input_versioning_and_soft_delete_are_opt_in(tf):
    """Issue 18, defect 9: versions plus soft delete stored a re-uploaded input up
    to three times, while outputs are keyed by the input's generation anyway."""
    b = tf.resource("google_storage_bucket", "input")
    assert block(b, "versioning")["enabled"] == "${var.input_versioning}"
    assert tf.default("input_versioning") is False
    assert block(b, "soft_delete_policy")["retention_duration_seconds"] == "${var.input_soft_delete_days * 86400}"
    assert tf.default("input_soft_delete_days") == 0


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

    # everything but the model registry, by prefix and by file name (what
    # they match, with the real terraform: test_model_registry.py)
    aged = [r for r in rules if block(r, "condition").get("age") == "${lifecycle_rule.value}"]
    assert len(aged) == 2, "old outputs: age rules that output_retention_days = 0 disables"
    for rule in aged:
        assert "var.output_retention_days > 0" in rule["__dynamic__"]
        assert block(rule, "action")["type"] == "Delete" and block(rule, "condition")["with_state"] == "LIVE"
    assert {block(r, "condition").get("matches_prefix") for r in aged} == {"${local.outputs_by_prefix}", None}
    assert {block(r, "condition").get("matches_suffix") for r in aged} == {"${local.outputs_by_name}", None}
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
    assert n["topic"] == "${google_pubsub_topic.input_events[0].id}"
    assert n["count"] == "${local.pubsub_enabled}", "trigger = \"pubsub\" only (test_eventarc.py)"
    # the Cloud Storage service agent may publish before the notification is made,
    # and the push subscription exists (issue 18, defect 6; the real terraform's
    # order: test_scripts_terraform.py)
    assert "${google_pubsub_topic_iam_member.gcs_publishes_input_events}" in n["depends_on"]
    assert "${google_pubsub_subscription.push}" in n["depends_on"]
    pub = tf.resource("google_pubsub_topic_iam_member", "gcs_publishes_input_events")
    assert pub["role"] == "roles/pubsub.publisher"
    assert pub["topic"] == "${google_pubsub_topic.input_events[0].id}"
    assert "data.google_storage_project_service_account.gcs" in pub["member"]


def test_no_notification_on_the_output_bucket(tf):
    for name, n in tf.resources.get("google_storage_notification", {}).items():
        assert "output" not in n["bucket"], name


# --- Pub/Sub --------------------------------------------------------------------------------


def test_push_subscription_authenticates_retries_and_dead_letters(tf):
    sub = tf.resource("google_pubsub_subscription", "push")
    assert sub["topic"] == "${google_pubsub_topic.input_events[0].id}"
    assert sub["ack_deadline_seconds"] == "${var.request_timeout_seconds}"

    push = block(sub, "push_config")
    assert push["push_endpoint"] == '${google_cloud_run_v2_service.services["push"].uri}/'
    oidc = block(push, "oidc_token")
    assert oidc["audience"] == "${var.push_audience}"
    assert oidc["service_account_email"] == "${google_service_account.push[0].email}"

    retry = block(sub, "retry_policy")
    assert retry["minimum_backoff"] == "${var.retry_minimum_backoff_seconds}s"
    assert retry["maximum_backoff"] == "${var.retry_maximum_backoff_seconds}s"
    assert tf.default("retry_minimum_backoff_seconds") == 10 and tf.default("retry_maximum_backoff_seconds") == 600

    dlq = block(sub, "dead_letter_policy")
    assert dlq["dead_letter_topic"] == "${google_pubsub_topic.dead_letters[0].id}"
    assert dlq["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    assert 20 <= tf.default("max_delivery_attempts") <= 100, "generous, 429s count as attempts"
    expiration = block(sub, "expiration_policy")
    assert expiration["ttl"] == ""


def test_max_delivery_attempts_is_explained(tf):
    text = tf.text["pubsub.tf"]
    comment = text[text.index("How max_delivery_attempts"):text.index("dead_letter_policy {")]
    assert "429" in comment and "hours" in comment


def test_pubsub_service_agent_is_made_by_terraform(tf):
    """Issue 18, defect 9: google_project_service_identity (google-beta: google 6.50
    lacks it), not a `gcloud beta` call in setup.sh."""
    agent = tf.resource("google_project_service_identity", "pubsub")
    assert agent["provider"] == "${google-beta}" and agent["service"] == "pubsub.googleapis.com"
    assert tf.locals["pubsub_service_agent"] == "${google_project_service_identity.pubsub.member}"
    google_beta = [t["required_providers"][0]["google-beta"] for t in tf.terraform if "required_providers" in t]
    assert google_beta == [{"source": "hashicorp/google-beta", "version": "~> 6.50"}]
    assert "gcloud beta" not in (ROOT / "setup.sh").read_text()


def test_pubsub_service_agent_can_dead_letter(tf):
    pub = tf.resource("google_pubsub_topic_iam_member", "pubsub_agent_publishes_dead_letters")
    assert pub["topic"] == "${google_pubsub_topic.dead_letters[0].id}"
    assert pub["role"] == "roles/pubsub.publisher" and pub["member"] == "${local.pubsub_service_agent}"
    ack = tf.resource("google_pubsub_subscription_iam_member", "pubsub_agent_acks_push")
    assert ack["subscription"] == "${google_pubsub_subscription.push[0].id}"
    assert ack["role"] == "roles/pubsub.subscriber" and ack["member"] == "${local.pubsub_service_agent}"


def test_dead_letters_are_kept_seven_days_in_a_pull_subscription_and_alerted(tf):
    sub = tf.resource("google_pubsub_subscription", "dead_letters")
    assert sub["topic"] == "${google_pubsub_topic.dead_letters[0].id}"
    assert "push_config" not in sub, "dead letters are pulled for inspection and redrive"
    assert sub["message_retention_duration"] == "604800s"
    alert = tf.resource("google_monitoring_alert_policy", "dead_letters")
    cond = block(block(alert, "conditions"), "condition_threshold")
    assert "num_undelivered_messages" in cond["filter"]
    assert "google_pubsub_subscription.dead_letters[0].name" in cond["filter"]
    assert cond["comparison"] == "COMPARISON_GT" and cond["threshold_value"] == 0


# --- image and service ---------------------------------------------------------------------


def test_artifact_registry_repository_for_the_image(tf):
    repo = tf.resource("google_artifact_registry_repository", "images")
    assert repo["format"] == "DOCKER" and repo["location"] == "${var.region}"
    assert "google_artifact_registry_repository.images" in tf.locals["image_uri"]


def _service(tf, name: str = "push"):
    """The Cloud Run service `name` as Terraform makes it: the one for_each
    resource, with each.value.X replaced by X of local.services[name] (a null
    argument is an unset one)."""
    return _resolve(tf.resource("google_cloud_run_v2_service", "services"), tf.locals["services"][name])


def _resolve(node, entry: dict):
    each = re.compile(r"\$\{each\.value\.(\w+)\}")
    if isinstance(node, str):
        whole = each.fullmatch(node)
        if whole:
            return entry[whole.group(1)]
        return each.sub(lambda m: str(entry[m.group(1)]), node)
    if isinstance(node, dict):
        resolved = {k: _resolve(v, entry) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not None}
    if isinstance(node, list):
        return [_resolve(v, entry) for v in node]
    return node


def _moved_to(tf, address: str) -> str:
    """Where the moved blocks take `address` (following chains)."""
    moves = {m["from"].strip("${}"): m["to"].strip("${}") for m in tf.moved}
    while address in moves:
        address = moves[address]
    return address


def _container(tf, name: str = "push"):
    return block(block(_service(tf, name), "template"), "containers")


def test_push_service_settings_come_from_variables(tf):
    tmpl = block(_service(tf), "template")
    limits = block(_container(tf), "resources")["limits"]
    assert limits == {"cpu": "${var.cpu}", "memory": "${var.memory}"}
    assert tmpl["timeout"] == "${var.request_timeout_seconds}s"
    scaling = block(tmpl, "scaling")
    assert scaling == {"min_instance_count": "${var.min_instances}", "max_instance_count": "${var.max_instances}"}
    assert _container(tf)["image"] == "${local.image_uri}:${var.image_tag}"
    defaults = {v: tf.default(v) for v in ("cpu", "memory", "max_concurrent_jobs", "request_timeout_seconds",
                                           "min_instances", "max_instances")}
    assert defaults == {"cpu": "2", "memory": "1Gi", "max_concurrent_jobs": 2, "request_timeout_seconds": 600,
                        "min_instances": 0, "max_instances": 10}


def test_push_concurrency_equals_its_job_slots_by_construction(tf):
    """Issue 18, defect 4: 16 requests per instance for 2 job slots made the app
    answer 429 to 14 of them (burning delivery attempts) while Cloud Run saw no
    reason to scale. One variable now feeds both."""
    tmpl = block(_service(tf), "template")
    assert tmpl["max_instance_request_concurrency"] == "${var.max_concurrent_jobs}"
    assert _env(tf)["MAX_CONCURRENT_JOBS"]["value"] == "${tostring(var.max_concurrent_jobs)}"
    assert "container_concurrency" not in tf.variables, "no second knob for the push service's concurrency"
    assert "${var.max_concurrent_jobs}" not in str(block(_service(tf, "predict"), "template"))


def test_predict_has_its_own_service_from_the_same_image(tf):
    """Issue 18, defect 4: /predict (high concurrency, low latency) no longer shares
    instances with the jobs."""
    push, predict = _service(tf), _service(tf, "predict")
    tmpl = block(predict, "template")
    assert predict["name"] == "${local.predict_service_name}" and push["name"] == "${local.push_service_name}"
    assert tf.locals["predict_service_name"] == "${var.service_name}-predict"
    assert _container(tf, "predict")["image"] == _container(tf)["image"]
    assert tmpl["max_instance_request_concurrency"] == "${var.predict_concurrency}"
    assert tf.default("predict_concurrency") >= 40
    assert block(tmpl, "scaling") == {"min_instance_count": "${var.predict_min_instances}",
                                      "max_instance_count": "${var.predict_max_instances}"}
    assert tmpl["service_account"] == "${google_service_account.predict.email}"
    assert "custom_audiences" not in predict, "callers use the service URL as audience"
    # no replacement of the single service of old, nor of either service
    # when they had a resource each
    for old, new in (("scorer", "push"), ("push", "push"), ("predict", "predict")):
        assert _moved_to(tf, f"google_cloud_run_v2_service.{old}") == f'google_cloud_run_v2_service.services["{new}"]'



def test_long_jobs_cannot_outlive_their_request(tf):
    """Issue 18, defect 5: the request timeout and the ack deadline are one value;
    CPU only during requests is kept, with the reason written down, and inputs
    too large to finish inline are refused by size (INLINE_MAX_BYTES)."""
    tmpl = block(_service(tf), "template")
    sub = tf.resource("google_pubsub_subscription", "push")
    assert tmpl["timeout"] == "${var.request_timeout_seconds}s"
    assert sub["ack_deadline_seconds"] == "${var.request_timeout_seconds}"
    validation = block(tf.variables["request_timeout_seconds"], "validation")["condition"]
    assert "<= 600" in validation, "Pub/Sub's ack deadline is at most 600 s"
    resources = block(_container(tf), "resources")
    assert resources["cpu_idle"] is True
    text = tf.text["cloud_run.tf"]
    reason = text[text.index("# CPU only while requests are in flight"):text.index("cpu_idle          = true")]
    assert "never outlives its request" in reason and "INLINE_MAX_BYTES" in reason
    assert "INLINE_MAX_BYTES" in tf.locals["push_env"] and "var.inline_max_bytes" in tf.locals["push_env"]
    assert tf.default("inline_max_bytes") is None, "null: the binary's own measured default"


def test_request_timeout_matches_the_ack_deadline(tf):
    assert tf.default("request_timeout_seconds") == 600


def test_services_are_not_public(tf):
    for name in ("push", "predict"):
        assert _service(tf, name).get("invoker_iam_disabled", False) is False, name
    svc = _service(tf)
    # the fixed audience with trigger = "pubsub"; none with "eventarc" (its
    # tokens carry the service URL): test_eventarc.py
    assert svc["custom_audiences"] == "${var.trigger == \"pubsub\" ? ['${var.push_audience}'] : null}"
    assert block(svc, "template")["service_account"] == f"${{{RUNTIME}.email}}"


def _env(tf, name: str = "push") -> dict[str, dict]:
    """The container's environment: the static env blocks, the map the dynamic
    "env" block iterates (a local: its keys), and dynamic single-value blocks."""
    container = _container(tf, name)
    env = {e["name"]: e for e in container.get("env", [])}
    for dyn in container.get("dynamic", []):
        if "env" not in dyn:
            continue
        source = dyn["env"]["for_each"]
        content = block(dyn["env"], "content")
        if content["name"] != "${env.key}":
            env[content["name"]] = dict(content, __dynamic__=source)
        elif isinstance(source, dict):  # a map written out: its entries
            env.update({k: dict(content, value=v) for k, v in source.items()})
        elif local := re.fullmatch(r"\$\{local\.(\w+)\}", source):
            env.update(_local_env(tf, local.group(1)))
        else:  # cond ? { NAME = value } : {} (as python-hcl2 writes it)
            for name, value in re.findall(r"\{'([A-Z_]+)': '([^']*)'\}", source):
                env[name] = dict(content, __dynamic__=source, __value__=value)
    return env


def _local_text(tf, local: str) -> str:
    """The text of local `local`: its line and, when that opens brackets, the
    lines up to the one back at its indent (terraform fmt-ed), in whichever
    file declares it."""
    for text in tf.text.values():
        m = re.search(rf"^  {local} = .*$", text, re.M)
        if not m:
            continue
        lines = text[m.start():].split("\n")
        out = [lines[0]]
        if sum(lines[0].count(c) for c in "([{") > sum(lines[0].count(c) for c in ")]}"):
            for line in lines[1:]:
                out.append(line)
                if re.match(r"^ {0,2}\S", line):
                    break
        return "\n".join(out)
    raise AssertionError(f"terraform/ declares no local {local}")


def _local_env(tf, local: str) -> dict[str, dict]:
    """NAME -> {"value": expression} of a local built from maps (text-level):
    merge() of maps and other such locals, or `var.x ? { ... } : {}` (whose
    entries are marked __dynamic__: set only when var.x is)."""
    body = _local_text(tf, local)
    conditional = re.match(rf"^  {local} = (var\.\w+[^?]*?) \? \{{$", body.split("\n")[0])
    out = {}
    for m in re.finditer(r"^\s+([A-Z_]+)\s*=\s*(.+)$", body, re.M):
        out[m.group(1)] = {"value": "${" + m.group(2).strip() + "}" if not m.group(2).startswith('"')
                           else m.group(2).strip().strip('"')}
        if conditional:
            out[m.group(1)]["__dynamic__"] = conditional.group(1)
    for m in re.finditer(r"local\.(\w+_env)\b", body):
        if m.group(1) != local:
            out.update({k: v for k, v in _local_env(tf, m.group(1)).items() if k not in out})
    for m in re.finditer(r"\{ ([A-Z_]+) = ([^}]+) \}", body):
        out[m.group(1)] = {"value": "${" + m.group(2).strip() + "}", "__dynamic__": True}
    return out


def test_service_environment(tf):
    push, predict = _env(tf, "push"), _env(tf, "predict")
    expected = PUSH_ENV | OPTIONAL_ENV | SHARD_ENV | LOAD_ENV | MODEL_ENV | FIT_ENV | {"INLINE_MAX_BYTES"}
    assert expected == set(push), f"unexpected or missing: {set(push) ^ expected}"
    assert {name: push[name]["__dynamic__"] for name in LOAD_ENV} == {
        "BIGQUERY_TABLE": "var.bigquery_enabled", "BIGQUERY_LOCATION": "var.bigquery_enabled",
        "OUTPUT_FORMAT": "var.bigquery_enabled", "RESULTS_TOPIC": "var.results_topic_enabled"}
    assert {name: push[name]["__dynamic__"] for name in FIT_ENV} == {
        "TRAINING_PREFIX": 'var.training_prefix != ""', "PROMOTE": 'var.training_prefix != ""'}
    for env in (push, predict):
        assert env["MODEL_REFRESH_SECONDS"] == {"value": "${tostring(var.model_refresh_seconds)}"}
    assert PREDICT_ENV | OPTIONAL_ENV | {"PREDICT_API_KEYS"} == set(predict), \
        f"unexpected or missing: {set(predict) ^ (PREDICT_ENV | OPTIONAL_ENV | {'PREDICT_API_KEYS'})}"
    assert push["SERVICE_ROLE"]["value"] == "push" and predict["SERVICE_ROLE"]["value"] == "predict"
    assert push["INPUT_BUCKET"]["value"] == "${google_storage_bucket.input.name}"
    for env in (push, predict):
        assert env["OUTPUT_BUCKET"]["value"] == "${google_storage_bucket.output.name}"
        assert env["LOG_FORMAT"]["value"] == "json"
        assert env["RUST_LOG"]["value"] == "${var.log_level}"
        assert "PORT" not in env, "Cloud Run sets PORT itself"
        for name in OPTIONAL_ENV:
            assert env[name].get("__dynamic__"), f"{name} is set only when configured"
    # var.push_audience and the push account, or Eventarc's (test_eventarc.py)
    assert push["PUSH_AUDIENCE"]["value"] == "${local.push_audience}"
    assert push["PUSH_SERVICE_ACCOUNT"]["value"] == "${local.push_identity}"
    assert push["LEASE_TTL_SECONDS"]["value"] == "${tostring(var.lease_ttl_seconds)}"
    assert push["INLINE_MAX_BYTES"]["value"] == "${tostring(var.inline_max_bytes)}"
    secret = block(block(predict["PREDICT_API_KEYS"], "value_source"), "secret_key_ref")
    assert secret["version"] == "latest"
    assert tf.default("predict_api_keys_secret") == "" and tf.default("model_uri") == ""


def test_probes(tf):
    for name in ("push", "predict"):
        c = _container(tf, name)
        assert block(block(c, "startup_probe"), "http_get")["path"] == "/ready"
        assert block(block(c, "liveness_probe"), "http_get")["path"] == "/health"
        assert block(c, "ports")["container_port"] == 8080


def test_terraform_leaves_deployed_images_and_traffic_to_deploy_sh(tf):
    for name in ("push", "predict"):
        lc = block(_service(tf, name), "lifecycle")
        ignored = {str(x).strip("${}") for x in lc["ignore_changes"]}
        assert {"template[0].containers[0].image", "traffic"} <= ignored, name


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


def _grants(tf, account: str) -> set:
    grants = set()
    for rtype, name, body in _iam(tf):
        if account in str(body.get("member", "")) + str(body.get("members", "")):
            target = (body.get("bucket") or body.get("secret_id") or body.get("dataset_id") or body.get("topic")
                      or body.get("project") or body.get("service_account_id"))
            grants.add((rtype, name, target, body["role"]))
    return grants


def test_runtime_account_holds_exactly_its_bucket_roles(tf):
    assert _grants(tf, RUNTIME) == {
        ("google_storage_bucket_iam_member", "runtime_reads_input", "${google_storage_bucket.input.name}",
         "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", "runtime_reads_output", "${google_storage_bucket.output.name}",
         "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", "runtime_creates_output", "${google_storage_bucket.output.name}",
         "roles/storage.objectCreator"),
        # replacing the registry's aliases, under _models/ only (test_model_registry.py)
        ("google_storage_bucket_iam_member", "runtime_writes_models", "${google_storage_bucket.output.name}",
         "roles/storage.objectUser"),
        ("google_storage_bucket_iam_member", "runtime_reads_model", "${each.key}", "roles/storage.objectViewer"),
        # the shard job: start its executions, as its account (test_shard_job.py)
        ("google_cloud_run_v2_job_iam_member", "runtime_runs_shard_job", None,
         "roles/run.jobsExecutorWithOverrides"),
        ("google_cloud_run_v2_job_iam_member", "runtime_views_shard_job", None, "roles/run.viewer"),
        ("google_service_account_iam_member", "runtime_acts_as_shard", "${google_service_account.shard[0].name}",
         "roles/iam.serviceAccountUser"),
        # bigquery_enabled: append to the predictions dataset, run load jobs
        # (test_bigquery_results.py)
        ("google_bigquery_dataset_iam_member", "runtime_edits_predictions",
         "${google_bigquery_dataset.predictions[0].dataset_id}", "roles/bigquery.dataEditor"),
        ("google_project_iam_member", "runtime_runs_bigquery_jobs", "${var.project_id}", "roles/bigquery.jobUser"),
        # results_topic_enabled: publish to the results topic
        ("google_pubsub_topic_iam_member", "runtime_publishes_results", "${google_pubsub_topic.results[0].id}",
         "roles/pubsub.publisher"),
    }
    model = tf.resource("google_storage_bucket_iam_member", "runtime_reads_model")
    assert model["for_each"] == "${local.model_buckets}"


def test_predict_account_reads_the_model_and_nothing_else(tf):
    assert _grants(tf, "google_service_account.predict") == {
        ("google_storage_bucket_iam_member", "predict_reads_model", "${each.key}", "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", "predict_reads_models", "${google_storage_bucket.output.name}",
         "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", "predict_creates_models", "${google_storage_bucket.output.name}",
         "roles/storage.objectCreator"),
        ("google_secret_manager_secret_iam_member", "predict_reads_api_keys", "${var.predict_api_keys_secret}",
         "roles/secretmanager.secretAccessor"),
    }
    assert tf.resource("google_storage_bucket_iam_member", "predict_reads_model")["for_each"] == \
        "${local.model_uri_buckets}"
    # the registry, always (it stores its start-up model there), and only it
    for name in ("predict_reads_models", "predict_creates_models"):
        registry = tf.resource("google_storage_bucket_iam_member", name)
        assert "count" not in registry and "for_each" not in registry, name
        assert block(registry, "condition")["expression"] == \
            'resource.name.startsWith("projects/_/buckets/${local.output_bucket}/objects/_models/")', name
    secret = tf.resource("google_secret_manager_secret_iam_member", "predict_reads_api_keys")
    assert secret["count"] == '${var.predict_api_keys_secret != "" ? 1 : 0}'


def test_runtime_account_has_no_project_level_role_but_bigquery_job_user(tf):
    """Only roles/bigquery.jobUser, with bigquery_enabled: bigquery.jobs.create
    exists on projects only (a load job belongs to the project)."""
    for name, body in tf.resources.get("google_project_iam_member", {}).items():
        assert "storage" not in body["role"], f"{name}: project-level storage role"
        if RUNTIME in body["member"]:
            assert (name, body["role"], body["count"]) == (
                "runtime_runs_bigquery_jobs", "roles/bigquery.jobUser", "${local.bigquery_enabled}")


def test_invokers_are_the_push_account_and_the_optional_predict_list(tf):
    """Only the push account may invoke the push service; predict_invokers invoke the predict service."""
    invokers = {name: body for name, body in tf.resources["google_cloud_run_v2_service_iam_member"].items()
                if body["role"] == "roles/run.invoker"}
    assert set(invokers) == {"push_invoker", "events_invoker", "predict_invokers"}
    assert invokers["push_invoker"]["member"] == "${google_service_account.push[0].member}"
    assert invokers["events_invoker"]["member"] == "${google_service_account.events[0].member}"
    assert invokers["push_invoker"]["count"] == "${local.pubsub_enabled}"
    assert invokers["events_invoker"]["count"] == "${local.eventarc_enabled}"
    assert invokers["events_invoker"]["name"] == '${google_cloud_run_v2_service.services["push"].name}'
    assert invokers["push_invoker"]["name"] == '${google_cloud_run_v2_service.services["push"].name}'
    assert invokers["predict_invokers"]["name"] == '${google_cloud_run_v2_service.services["predict"].name}'
    assert invokers["predict_invokers"]["for_each"] == "${toset(var.predict_invokers)}"
    assert tf.default("predict_invokers") == []
    validation = block(tf.variables["predict_invokers"], "validation")
    assert "allUsers" in validation["error_message"]


def test_dedicated_service_accounts(tf):
    accounts = tf.resources["google_service_account"]
    assert {"runtime", "predict", "push", "builder"} <= set(accounts)
    assert len({a["account_id"] for a in accounts.values()}) == len(accounts)


# --- monitoring ---------------------------------------------------------------------------------


def _dynamic(body: dict, name: str) -> dict:
    """The content of the one dynamic block `name` of a body, with its for_each."""
    found = [d[name] for d in body.get("dynamic", []) if name in d]
    assert len(found) == 1, f"expected one dynamic {name} block, got {found!r}"
    return dict(block(found[0], "content"), __for_each__=found[0]["for_each"])


def test_slos(tf):
    """One SLO resource over local.slos: an availability SLO counts its requests
    answered 2xx among 2xx + 5xx, a latency SLO the values of a distribution up
    to a bound."""
    slo = tf.resource("google_monitoring_slo", "slos")
    assert slo["for_each"] == "${local.slos}" and slo["slo_id"] == "${each.key}"
    assert slo["service"] == "${each.value.service}" and slo["goal"] == "${each.value.goal}"
    assert slo["rolling_period_days"] == 28
    sli = block(slo, "request_based_sli")
    ratio = _dynamic(sli, "good_total_ratio")
    assert ratio["__for_each__"] == "${can(each.value.requests) ? ['${each.value.requests}'] : []}"
    assert ratio["good_service_filter"] == '${good_total_ratio.value} AND metric.labels.response_code_class="2xx"'
    assert ratio["bad_service_filter"] == '${good_total_ratio.value} AND metric.labels.response_code_class="5xx"'
    cut = _dynamic(sli, "distribution_cut")
    assert cut["__for_each__"] == "${can(each.value.latency) ? ['${each.value.latency}'] : []}"
    assert cut["distribution_filter"] == "${distribution_cut.value.filter}"
    assert block(cut, "range")["max"] == "${distribution_cut.value.max}"

    slos = tf.locals["slos"]
    assert set(slos) == {"push-availability", "file-latency", "predict-availability", "predict-latency"}
    for name, slo in slos.items():
        assert ("requests" in slo) != ("latency" in slo), f"{name}: an availability or a latency SLO"

    avail = slos["push-availability"]
    assert "run.googleapis.com/request_count" in tf.locals["run_request_count"]
    assert "local.push_service_name" in tf.locals["run_requests"]
    assert avail["requests"] == "${local.run_requests}"
    assert avail["goal"] == "${var.availability_slo_goal}" and tf.default("availability_slo_goal") == 0.995

    lat = slos["file-latency"]
    assert "local.metric_job_duration" in lat["latency"]["filter"]
    assert lat["latency"]["max"] == "${var.file_latency_budget_ms}"
    assert lat["goal"] == "${var.latency_slo_goal}" and tf.default("latency_slo_goal") == 0.99
    for s in (avail, lat):
        assert s["service"] == "${google_monitoring_custom_service.scorer.service_id}"

    # the predict service's own SLOs
    pavail, plat = slos["predict-availability"], slos["predict-latency"]
    for s in (pavail, plat):
        assert s["service"] == "${google_monitoring_custom_service.predict.service_id}"
    assert pavail["requests"] == "${local.predict_requests}"
    assert "run.googleapis.com/request_latencies" in plat["latency"]["filter"]
    assert "local.predict_service_name" in plat["latency"]["filter"]


def test_burn_rate_alerts_are_multi_window_with_a_minimum_of_events(tf):
    """Issue 18, defect 8: single-window conditions paged on noise, and one slow
    file of three could page the latency SLO."""
    burn = tf.resource("google_monitoring_alert_policy", "slo_burn")
    assert burn["for_each"] == "${local.burn_alerts}" and burn["combiner"] == "AND"
    # every SLO with every window (the real terraform's instances:
    # test_scripts_terraform.py), each alert on its own SLO
    alerts = tf.locals["burn_alerts"]
    assert "in local.slos" in alerts and "in local.burn_windows" in alerts
    assert "google_monitoring_slo.slos[name].name" in alerts
    windows = tf.text["monitoring.tf"]
    assert re.search(r"fast = \{ long = 3600, short = 300, rate = 14\.4", windows)
    assert re.search(r"slow = \{ long = 21600, short = 1800, rate = 6,", windows)
    conds = [block(c, "condition_threshold") for c in burn["conditions"]]
    assert len(conds) == 3
    long_, short, events = conds
    assert long_["filter"] == 'select_slo_burn_rate("${each.value.slo}", "${each.value.long}s")'
    assert short["filter"] == 'select_slo_burn_rate("${each.value.slo}", "${each.value.short}s")'
    assert long_["threshold_value"] == short["threshold_value"] == "${each.value.rate}"
    # the minimum of events, over the long window
    assert events["filter"] == "${each.value.events}"
    assert events["threshold_value"] == "${var.slo_alert_min_events - 1}"
    assert block(events, "aggregations")["alignment_period"] == "${each.value.long}s"
    assert tf.default("slo_alert_min_events") >= 10
    # the file-latency SLO counts scored files, the others requests of their own service
    slos = tf.locals["slos"]
    assert slos["file-latency"]["events"] == "${local.scored_files}"
    assert tf.locals["scored_files"].endswith('metric.labels.outcome="scored"')
    assert slos["push-availability"]["events"] == "${local.run_requests}"
    assert slos["predict-availability"]["events"] == slos["predict-latency"]["events"] == "${local.predict_requests}"


def test_log_based_metrics_are_read_only_through_the_pause(tf):
    """Issue 18, defect 2: an SLO or alert that names a log-based metric created in
    the same apply gets 404 for minutes; everything reads the metric names from
    the time_sleep's triggers, so it is created after the pause (the real
    terraform's order: test_scripts_terraform.py)."""
    pause = tf.resource("time_sleep", "log_metrics")
    assert pause["create_duration"] == "${var.log_metric_propagation_seconds}s"
    # every log-based metric is a trigger (the real terraform's triggers:
    # test_shard_job.py)
    for metric in tf.resources["google_logging_metric"]:
        assert f"google_logging_metric.{metric}" in pause["triggers"], metric
    for name, text in tf.text.items():
        for m in re.finditer(r"google_logging_metric\.\w+(\[[^\]]*\])?\.name", text):
            line = text[:m.start()].count("\n") + 1
            assert name == "monitoring.tf" and "triggers" in text[text.rfind("time_sleep", 0, m.start()):m.start()], \
                f"{name}:{line} reads a log-based metric without the pause"
    time = [t["required_providers"][0]["time"] for t in tf.terraform if "required_providers" in t]
    assert time == [{"source": "hashicorp/time", "version": "~> 0.13"}]


def test_log_based_metrics_for_jobs_and_rows(tf):
    summary = tf.locals["job_summary_filter"]
    assert "job summary" in summary and "local.job_summary_sources" in summary
    # the push service's job summaries, and the shard job's (the task that
    # commits a large input logs it); the real filter: test_shard_job.py
    sources = tf.locals["job_summary_sources"]
    assert "cloud_run_revision" in sources and "local.push_service_name" in sources
    assert "cloud_run_job" in sources and "local.shard_job_name" in sources
    jobs = tf.resource("google_logging_metric", "jobs")
    assert jobs["label_extractors"] == {"outcome": "EXTRACT(jsonPayload.outcome)"}
    rows = tf.resource("google_logging_metric", "rows_scored")
    assert rows["value_extractor"] == "EXTRACT(jsonPayload.rows_scored)"
    failed = tf.resource("google_monitoring_alert_policy", "failed_files")
    conditions = _dynamic(failed, "conditions")
    assert conditions["__for_each__"] == "${local.failed_file_conditions}"
    assert block(conditions, "condition_threshold")["filter"] == "${conditions.value.filter}"
    assert 'metric.labels.outcome="failed"' in tf.locals["failed_file_conditions"]
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
    assert tf.outputs["push_service_url"]["value"] == '${google_cloud_run_v2_service.services["push"].uri}'
    assert tf.outputs["predict_service_url"]["value"] == '${google_cloud_run_v2_service.services["predict"].uri}'
    assert tf.outputs["dead_letter_subscription"]["value"] == "${one(google_pubsub_subscription.dead_letters[*].id)}"


def test_github_deployment_is_keyless_and_scoped(tf):
    """Issue 18, defect 9: the trust is keyed on the repository's numeric id, which
    a renamed or re-created repository cannot take over."""
    provider = tf.resource("google_iam_workload_identity_pool_provider", "github")
    cond = provider["attribute_condition"]
    assert cond == 'assertion.repository_id == "${var.github_repository_id}" && assertion.ref == "refs/heads/main"'
    assert provider["attribute_mapping"]["attribute.repository_id"] == "assertion.repository_id"
    member = tf.resource("google_service_account_iam_member", "github_impersonates_deployer")["member"]
    assert member.endswith("/attribute.repository_id/${var.github_repository_id}")
    assert "var.github_repository}" not in str(provider) + member, "the name is only a label"
    assert "regex" in block(tf.variables["github_repository_id"], "validation")["condition"]
    assert not tf.resources.get("google_service_account_key"), "no long-lived keys"
    dev = tf.resource("google_cloud_run_v2_service_iam_member", "deployer_develops")
    assert dev["role"] == "roles/run.developer" and "keys(local.services)" in dev["for_each"]
    assert dev["name"] == "${google_cloud_run_v2_service.services[each.key].name}"
    acts = tf.resource("google_service_account_iam_member", "deployer_acts_as")
    assert acts["role"] == "roles/iam.serviceAccountUser" and acts["service_account_id"] == "${each.value}"
    for account in ("runtime", "predict"):
        assert f"google_service_account.{account}.name" in acts["for_each"]
