"""The shard job (terraform/cloud_run_job.tf): a Cloud Run job from the services'
image running `scorer shard`, which the push service starts for inputs over
INLINE_MAX_BYTES. The structure is read with python-hcl2; what Terraform
itself computes (the environment, DISPATCH_STALE_SECONDS, the preconditions,
what shard_job_enabled = false leaves out, the IAM members as they resolve)
with the real terraform on the mirror (tf_mirror.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, block
from script_harness import PROJECT, REGION, applied, console, instances, plan, said, terraform, write_mirror

JOB = "scorer-shard"
RUNTIME_MEMBER = f"serviceAccount:scorer-run@{PROJECT}.iam.gserviceaccount.com"
SHARD_SA = f"scorer-shard@{PROJECT}.iam.gserviceaccount.com"
LAST_ATTEMPT = "task failed on its last attempt; reporting the input as failed"


# --- the real terraform on the mirror ------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """terraform/ mirrored and initialised, no state (each test applies its own copy)."""
    return write_mirror(tmp_path_factory.mktemp("shard") / "tf")


def test_the_push_service_is_told_the_job_and_its_limits(mirror, tmp_path):
    tf = applied(mirror, tmp_path)
    push = console(tf, "local.push_env")
    assert push["SHARD_JOB"] == f"projects/{PROJECT}/locations/{REGION}/jobs/{JOB}"
    assert push["SHARD_BYTES"] == "1073741824" and push["MAX_TASKS"] == "100"
    assert push["SHARD_MAX_RETRIES"] == "3"
    out = {k: v["value"] for k, v in json.loads(terraform(tf, "output", "-json").stdout).items()}
    assert out["shard_job"] == push["SHARD_JOB"] and out["shard_job_name"] == JOB
    assert out["shard_service_account"] == SHARD_SA
    # the job is made before the push service that names it
    deps = json.loads((tf / "terraform.tfstate").read_text())["resources"]
    services = next(r for r in deps if r["name"] == "google_cloud_run_v2_service__services")
    assert all("terraform_data.google_cloud_run_v2_job__shard" in i["dependencies"] for i in services["instances"])
    job = instances(tf)["google_cloud_run_v2_job__shard"]
    assert [(j["name"], j["location"]) for j in job] == [(JOB, REGION)]


def test_max_retries_is_one_number_for_the_job_the_service_and_the_tasks(mirror, tmp_path):
    """A task's last attempt (attempt == SHARD_MAX_RETRIES) writes the input's
    failure report: the job's max_retries must be the same number."""
    tf = applied(mirror, tmp_path, "shard_max_retries=5")
    assert console(tf, "local.push_env", "shard_max_retries=5")["SHARD_MAX_RETRIES"] == "5"
    assert console(tf, "local.shard_env", "shard_max_retries=5")["SHARD_MAX_RETRIES"] == "5"


def test_the_job_template_takes_max_retries_timeout_and_size_from_the_variables(tf):
    job = tf.resource("google_cloud_run_v2_job", "shard")
    tmpl = block(block(job, "template"), "template")
    assert tmpl["max_retries"] == "${var.shard_max_retries}"
    assert tmpl["timeout"] == "${var.shard_task_timeout_seconds}s"
    assert tmpl["service_account"] == "${google_service_account.shard[0].email}"
    assert block(job, "template")["parallelism"] == "${var.shard_parallelism}"
    limits = block(block(tmpl, "containers"), "resources")["limits"]
    assert limits == {"cpu": "${var.shard_cpu}", "memory": "${var.shard_memory}"}
    assert job["deletion_protection"] == "${var.deletion_protection}"
    assert job["count"] == "${local.shard_enabled}"
    push_env = tf.locals["push_env"]
    assert "SHARD_MAX_RETRIES = tostring(var.shard_max_retries)" in tf.text["cloud_run.tf"]
    assert "var.shard_job_enabled ?" in push_env
    assert tf.default("shard_max_retries") == 3 and tf.default("shard_job_enabled") is True


def test_the_job_runs_scorer_shard_from_the_services_image(tf):
    job = tf.resource("google_cloud_run_v2_job", "shard")
    container = block(block(block(job, "template"), "template"), "containers")
    services = tf.resource("google_cloud_run_v2_service", "services")
    service_container = block(block(services, "template"), "containers")
    assert container["image"] == service_container["image"] == "${local.image_uri}:${var.image_tag}"
    # the image's entrypoint is the binary and its default command `serve`
    # (the services set neither): args replace the command
    dockerfile = (ROOT / "app" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/app/scorer"]' in dockerfile and 'CMD ["serve"]' in dockerfile
    assert container["args"] == ["shard"] and "command" not in container
    assert "args" not in service_container and "command" not in service_container
    # deploy.sh rolls the image; Terraform leaves it alone after creation
    ignored = {str(x).strip("${}") for x in block(job, "lifecycle")["ignore_changes"]}
    assert "template[0].template[0].containers[0].image" in ignored


def rust_envs(*files: str) -> set[str]:
    """The environment variables the binary's clap arguments read (literal env = "NAME")."""
    names = set()
    for f in files:
        names |= set(re.findall(r'env = "([A-Z_]+)"', (ROOT / "app" / "src" / f).read_text()))
    return names


def test_every_setting_terraform_gives_is_one_the_binary_reads(mirror, tmp_path):
    """The names, checked against `scorer serve` and `scorer shard` (their clap
    arguments in app/src/config), so a misspelt variable cannot pass silently."""
    tf = applied(mirror, tmp_path, "model_uri=gs://models-bkt/m.json")
    # (`scorer serve` flattens the model registry's settings, config/models.rs)
    serve = rust_envs("config/args.rs", "config/models.rs")
    shard = rust_envs("config/shard.rs")
    push = console(tf, "local.push_env", "model_uri=gs://models-bkt/m.json")
    # (RUST_LOG: the log filter's own variable, in both)
    assert set(push) - serve == {"RUST_LOG"}, f"push service settings `scorer serve` does not read: {set(push) - serve}"
    tasks = console(tf, "local.shard_env", "model_uri=gs://models-bkt/m.json")
    # RUST_LOG is read by the log filter, GOOGLE_CLOUD_PROJECT by the Google
    # clients; every other one by `scorer shard` itself
    assert set(tasks) - shard == {"RUST_LOG", "GOOGLE_CLOUD_PROJECT"}
    assert tasks["OUTPUT_BUCKET"] == f"{PROJECT}-scorer-output" and tasks["LOG_FORMAT"] == "json"
    assert tasks["MODEL_URI"] == "gs://models-bkt/m.json" and tasks["LEASE_TTL_SECONDS"] == push["LEASE_TTL_SECONDS"]
    # the execution sets the input and its model, Cloud Run the task: never the job's template
    for per_execution in ("INPUT_URI", "INPUT_GENERATION", "MODEL_NAME", "MODEL_VERSION", "CLOUD_RUN_TASK_INDEX"):
        assert per_execution not in tasks


def test_a_fitted_model_reaches_the_tasks_through_the_output_bucket(mirror, tmp_path):
    """With TRAINING_DATA_URI the push service fits the model and stores it in the
    registry (gs://OUTPUT/_models/...); each execution names it (MODEL_NAME,
    MODEL_VERSION): the tasks never fit, need no TRAINING_DATA_URI, and read the
    model with their output-bucket grant."""
    setting = "training_data_uri=gs://training-bkt/t.csv"
    tf = applied(mirror, tmp_path, setting)
    assert "TRAINING_DATA_URI" not in console(tf, "local.shard_env", setting)
    assert "TRAINING_DATA_URI" in console(tf, "local.push_env", setting)
    assert "google_storage_bucket_iam_member__shard_reads_model" not in instances(tf)


@pytest.mark.parametrize("timeout,retries,parallelism", [(3600, 3, 0), (600, 0, 0), (86400, 10, 0), (60, 2, 1)])
def test_dispatch_stale_seconds_covers_every_attempt_of_an_execution(mirror, tmp_path, timeout, retries, parallelism):
    """DISPATCH_STALE_SECONDS >= task timeout x (retries + 1) (x the tasks, when
    they take turns): a redelivery never starts a second execution beside a live one."""
    settings = (f"shard_task_timeout_seconds={timeout}", f"shard_max_retries={retries}",
                f"shard_parallelism={parallelism}", "shard_max_tasks=20", "shard_retention_days=90",
                "output_retention_days=0")
    tf = applied(mirror, tmp_path, *settings)
    stale = int(console(tf, "local.push_env", *settings)["DISPATCH_STALE_SECONDS"])
    waves = 20 if parallelism == 1 else 1
    assert stale >= timeout * (retries + 1) * waves
    assert stale <= timeout * (retries + 1) * waves + 3600, "a margin, not a multiple"


def test_a_dispatch_stale_seconds_shorter_than_an_execution_is_refused(mirror):
    r = plan(mirror, "dispatch_stale_seconds=3600")
    assert r.returncode != 0 and "shorter than one execution can run (14400 s" in said(r)
    ok = plan(mirror, "dispatch_stale_seconds=14400")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_shard_records_outlive_three_dispatches(mirror):
    """The _shards/ rule (or the outputs' rule, when shorter) may not delete the
    dispatch records of an input that can still be dispatched again."""
    r = plan(mirror, "shard_task_timeout_seconds=86400")  # 4 attempts of a day: 3 x 4 days > 7 days
    assert r.returncode != 0 and "_shards/ objects are deleted after 7 days" in said(r)
    # 3 x (2 h x 4 attempts + margin) > 1 day: outputs kept a day take _shards/ with them
    r = plan(mirror, "shard_task_timeout_seconds=7200", "output_retention_days=1")
    assert r.returncode != 0 and "deleted after 1 days" in said(r)
    r = plan(mirror, "shard_task_timeout_seconds=7200")
    assert r.returncode == 0, r.stdout + r.stderr
    r = plan(mirror, "shard_task_timeout_seconds=86400", "shard_retention_days=14")
    assert r.returncode == 0, r.stdout + r.stderr


def test_parallelism_is_none_or_one(mirror):
    """An execution of an input that cannot be cut into ranges has 1 task, and Cloud
    Run refuses a task count below the job's parallelism."""
    r = plan(mirror, "shard_parallelism=4")
    assert r.returncode != 0 and "shard_parallelism must be 0" in said(r)


# --- IAM -----------------------------------------------------------------------------------------


def test_the_push_services_account_may_run_this_job_and_act_as_its_account_only(mirror, tmp_path, tf):
    for name, role in (("runtime_runs_shard_job", "roles/run.jobsExecutorWithOverrides"),
                       ("runtime_views_shard_job", "roles/run.viewer")):
        grant = tf.resource("google_cloud_run_v2_job_iam_member", name)
        assert grant["role"] == role
        assert grant["name"] == "${google_cloud_run_v2_job.shard[0].name}"
        assert grant["member"] == "${google_service_account.runtime.member}"
    acts = tf.resource("google_service_account_iam_member", "runtime_acts_as_shard")
    assert acts["role"] == "roles/iam.serviceAccountUser"
    assert acts["service_account_id"] == "${google_service_account.shard[0].name}"
    assert acts["member"] == "${google_service_account.runtime.member}"
    # nothing project-wide for either role, nor for the runtime account but
    # running BigQuery load jobs (bigquery_enabled: test_bigquery_results.py)
    for name, body in tf.resources.get("google_project_iam_member", {}).items():
        assert body["role"] not in ("roles/run.jobsExecutorWithOverrides", "roles/iam.serviceAccountUser",
                                    "roles/run.invoker", "roles/run.developer"), name
        if "runtime" in body["member"]:
            assert body["role"] == "roles/bigquery.jobUser", name

    # as the real terraform resolves them: every grant to the runtime account,
    # with its target
    tf_dir = applied(mirror, tmp_path)
    grants = set()
    for name, inputs in instances(tf_dir).items():
        if "_iam_" not in name:
            continue
        for i in inputs:
            if i.get("member") == RUNTIME_MEMBER:
                target = i.get("bucket") or i.get("service_account_id") or i.get("name") or i.get("project")
                grants.add((name.split("__")[0], target, i["role"]))
    assert grants == {
        ("google_storage_bucket_iam_member", f"{PROJECT}-scorer-input", "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", f"{PROJECT}-scorer-output", "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", f"{PROJECT}-scorer-output", "roles/storage.objectCreator"),
        # replacing the model registry's aliases, under _models/ only (test_model_registry.py)
        ("google_storage_bucket_iam_member", f"{PROJECT}-scorer-output", "roles/storage.objectUser"),
        ("google_cloud_run_v2_job_iam_member", JOB, "roles/run.jobsExecutorWithOverrides"),
        # GetExecution (is it over?): run.executions.get on this job's executions
        ("google_cloud_run_v2_job_iam_member", JOB, "roles/run.viewer"),
        ("google_service_account_iam_member", f"projects/{PROJECT}/serviceAccounts/{SHARD_SA}",
         "roles/iam.serviceAccountUser"),
    }


def test_the_job_account_reads_and_creates_but_cannot_delete(mirror, tmp_path, tf):
    """Like the push service: outputs, shard records and manifests are
    create-only, so the tasks get objectViewer and objectCreator (which has no
    storage.objects.delete), on the input, output and model buckets only."""
    tf_dir = applied(mirror, tmp_path, "model_uri=gs://models-bkt/m.json")
    member = f"serviceAccount:{SHARD_SA}"
    grants = {(name.split("__")[0], i.get("bucket"), i["role"])
              for name, inputs in instances(tf_dir).items() if "_iam_" in name
              for i in inputs if i.get("member") == member}
    assert grants == {
        ("google_storage_bucket_iam_member", f"{PROJECT}-scorer-input", "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", f"{PROJECT}-scorer-output", "roles/storage.objectViewer"),
        ("google_storage_bucket_iam_member", f"{PROJECT}-scorer-output", "roles/storage.objectCreator"),
        ("google_storage_bucket_iam_member", "models-bkt", "roles/storage.objectViewer"),
    }
    # and nowhere in the configuration does the job's account get more (but
    # BigQuery loads and results with bigquery_enabled, results_topic_enabled:
    # test_bigquery_results.py)
    for rtype, name, body in tf.all_resources():
        if rtype.endswith("_iam_member") and "google_service_account.shard" in str(body.get("member", "")):
            assert (rtype, body["role"]) in {
                ("google_storage_bucket_iam_member", "roles/storage.objectViewer"),
                ("google_storage_bucket_iam_member", "roles/storage.objectCreator"),
                ("google_bigquery_dataset_iam_member", "roles/bigquery.dataEditor"),
                ("google_project_iam_member", "roles/bigquery.jobUser"),
                ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"),
            }, name


def test_without_the_job_nothing_of_it_exists(mirror, tmp_path):
    """shard_job_enabled = false: no job, account, grants or metric; the push
    service has no SHARD_JOB (large inputs get a failure report)."""
    tf = applied(mirror, tmp_path, "shard_job_enabled=false")
    names = instances(tf)
    leftovers = [n for n, inputs in names.items() if "shard" in n and inputs]
    assert leftovers == []
    push = console(tf, "local.push_env", "shard_job_enabled=false")
    assert not {"SHARD_JOB", "SHARD_BYTES", "MAX_TASKS", "SHARD_MAX_RETRIES", "DISPATCH_STALE_SECONDS"} & set(push)
    assert "cloud_run_job" not in console(tf, "local.job_summary_filter", "shard_job_enabled=false")
    assert set(console(tf, "local.failed_file_conditions", "shard_job_enabled=false")) == {"cloud_run_revision"}
    out = {k: v["value"] for k, v in json.loads(terraform(tf, "output", "-json").stdout).items()}
    assert out.get("shard_job_name") in (None, "") and out["shard_job"] == ""


# --- the output bucket ---------------------------------------------------------------------------


def test_shard_objects_have_their_own_lifecycle_rule(tf):
    """_shards/ is a top-level prefix of the output bucket (app/src/layout.rs:
    _shards/<input>/<generation>/...), so a prefix rule matches them and
    nothing else; the outputs the manifest lists keep the outputs' retention."""
    layout = (ROOT / "app" / "src" / "layout.rs").read_text()
    assert 'pub const SHARD_PREFIX: &str = "_shards/";' in layout
    assert 'shard_prefix: format!("{SHARD_PREFIX}{lead}/{generation}/")' in layout
    rules = tf.resource("google_storage_bucket", "output")["lifecycle_rule"]
    shards = [r for r in rules if block(r, "condition").get("matches_prefix") == ["_shards/"]]
    assert len(shards) == 1 and block(shards[0], "action")["type"] == "Delete"
    assert block(shards[0], "condition")["age"] == "${var.shard_retention_days}"
    assert block(shards[0], "condition")["with_state"] == "LIVE"
    assert tf.default("shard_retention_days") >= tf.default("lease_retention_days")


# --- monitoring ----------------------------------------------------------------------------------


def test_tasks_failed_on_their_last_attempt_are_counted_and_alerted(mirror, tmp_path, tf):
    """The message is the one `scorer shard` logs (app/src/cli/shard.rs) at ERROR."""
    shard_cli = (ROOT / "app" / "src" / "cli" / "shard.rs").read_text()
    assert re.search(r'tracing::error!\([^;]*"' + re.escape(LAST_ATTEMPT) + '"', shard_cli)
    metric = tf.resource("google_logging_metric", "shard_task_failures")
    assert metric["count"] == "${local.shard_enabled}"
    tf_dir = applied(mirror, tmp_path)
    filt = instances(tf_dir)["google_logging_metric__shard_task_failures"][0]["filter"]
    assert filt == ('resource.type="cloud_run_job" AND resource.labels.job_name="scorer-shard" AND severity=ERROR '
                    f'AND jsonPayload.message="{LAST_ATTEMPT}"')
    # read through the pause, like every log-based metric
    triggers = instances(tf_dir)["time_sleep__log_metrics"][0]["triggers"]
    assert triggers["shard_task_failures"] == "scorer_shard_task_failures"
    conditions = console(tf_dir, "local.failed_file_conditions")
    assert set(conditions) == {"cloud_run_revision", "cloud_run_job", "last_attempt"}
    assert conditions["last_attempt"]["filter"] == (
        'metric.type="logging.googleapis.com/user/scorer_shard_task_failures" AND resource.type="cloud_run_job"')
    # the job's own job summaries (the task that commits a large input logs
    # one) count like the push service's: a large input that failed alerts too
    assert conditions["cloud_run_job"]["filter"] == (
        'metric.type="logging.googleapis.com/user/scorer_jobs" AND resource.type="cloud_run_job" '
        'AND metric.labels.outcome="failed"')
    summary = console(tf_dir, "local.job_summary_filter")
    assert summary == ('((resource.type="cloud_run_job" AND resource.labels.job_name="scorer-shard") OR '
                       '(resource.type="cloud_run_revision" AND resource.labels.service_name="scorer")) '
                       'AND jsonPayload.message="job summary"')
    assert re.search(r'"job summary"', shard_cli), "the committing task logs the input's job summary"
    # the file-latency SLO's durations stay the inline files' (the job's
    # summaries have no duration_ms)
    assert instances(tf_dir)["google_logging_metric__job_duration"][0]["filter"] == (
        'resource.type="cloud_run_revision" AND resource.labels.service_name="scorer" '
        'AND jsonPayload.message="job summary" AND jsonPayload.outcome="scored"')
