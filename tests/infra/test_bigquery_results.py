"""Predictions in BigQuery (terraform/bigquery.tf, bigquery_enabled) and a
results topic (terraform/results.tf, results_topic_enabled), both off by
default. The structure is read with python-hcl2; what Terraform itself
computes (which resources exist, the services' environment, the grants as
they resolve, the schema, the location preconditions) with the real
terraform on the mirror (tf_mirror.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, block
from script_harness import PROJECT, REGION, applied, console, instances, plan, said, terraform, write_mirror
from test_shard_job import rust_envs

RUNTIME_MEMBER = f"serviceAccount:scorer-run@{PROJECT}.iam.gserviceaccount.com"
SHARD_MEMBER = f"serviceAccount:scorer-shard@{PROJECT}.iam.gserviceaccount.com"
BOTH = ("bigquery_enabled=true", "results_topic_enabled=true")
TABLE = f"{PROJECT}.scorer.predictions"
TOPIC = f"projects/{PROJECT}/topics/scorer-results"
LOAD_ENV = {"BIGQUERY_TABLE", "BIGQUERY_LOCATION", "OUTPUT_FORMAT", "RESULTS_TOPIC"}
# what the scorer appends after the input columns, in order, with their BigQuery types
APPENDED = [("probability", "FLOAT64"), ("prediction", "INT64"), ("source_uri", "STRING"),
            ("source_generation", "INT64"), ("row_number", "INT64"), ("model_version", "STRING"),
            ("scored_at", "TIMESTAMP")]
# the header of the shipped data/scl_flights_2017.csv
SHIPPED_COLUMNS = ["split", "OPERA", "TIPOVUELO", "MES", "atraso_15"]
BIGQUERY_ONLY = ("google_bigquery_dataset__predictions", "google_bigquery_table__predictions",
                 "google_bigquery_dataset_iam_member__runtime_edits_predictions",
                 "google_bigquery_dataset_iam_member__shard_edits_predictions",
                 "google_project_iam_member__runtime_runs_bigquery_jobs",
                 "google_project_iam_member__shard_runs_bigquery_jobs")
RESULTS_ONLY = ("google_pubsub_topic__results", "google_pubsub_subscription__results_example",
                "google_pubsub_topic_iam_member__runtime_publishes_results",
                "google_pubsub_topic_iam_member__shard_publishes_results")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("bigquery") / "tf")


def existing(tf: Path) -> set[str]:
    return {name for name, inputs in instances(tf).items() if inputs}


def outputs(tf: Path) -> dict:
    return {k: v["value"] for k, v in json.loads(terraform(tf, "output", "-json").stdout).items()}


def scl_columns() -> list[str]:
    """The raw SCL file's 18 columns, as data/README.md lists them."""
    readme = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"The original raw file had 18 columns \(`([^`]+)`\)", " ".join(readme.split()))
    assert listed, "data/README.md no longer lists the raw file's columns"
    return [c.strip() for c in listed.group(1).split(",")]


# --- off by default ---------------------------------------------------------------------------


def test_both_are_off_by_default_and_then_nothing_of_them_exists(mirror, tmp_path, tf):
    assert tf.default("bigquery_enabled") is False and tf.default("results_topic_enabled") is False
    assert tf.default("bigquery_dataset_id") == "" and tf.default("bigquery_table_id") == "predictions"
    for name in ("bigquery_enabled", "bigquery_dataset_id", "bigquery_table_id", "bigquery_input_columns",
                 "results_topic_enabled"):
        assert len(tf.variables[name]["description"]) > 40, name
    state = applied(mirror, tmp_path)
    assert not (set(BIGQUERY_ONLY) | set(RESULTS_ONLY)) & existing(state)
    for env in ("local.push_env", "local.shard_env"):
        assert not LOAD_ENV & set(console(state, env)), env
    assert "bigquery.googleapis.com" not in console(state, "local.apis")
    out = outputs(state)
    assert out["bigquery_table"] == "" and out.get("bigquery_dataset") is None
    assert out.get("results_topic") is None and out.get("results_subscription") is None


# --- enabled: the environment ---------------------------------------------------------------


def test_enabled_the_push_service_and_the_shard_job_are_told_the_table_and_the_topic(mirror, tmp_path):
    state = applied(mirror, tmp_path, *BOTH)
    assert set(BIGQUERY_ONLY) | set(RESULTS_ONLY) <= existing(state)
    for env in ("local.push_env", "local.shard_env"):
        values = console(state, env, *BOTH)
        assert {k: values.get(k) for k in LOAD_ENV} == {
            "BIGQUERY_TABLE": TABLE,  # project.dataset.table (TableRef::parse)
            "BIGQUERY_LOCATION": REGION,  # the buckets' location, the region by default
            # the format the table's schema is made for, with provenance (auto) on: without
            # it the binary refuses BIGQUERY_TABLE at start
            "OUTPUT_FORMAT": "parquet",
            "RESULTS_TOPIC": TOPIC,
        }, env
    # the online API does not load or publish
    assert not LOAD_ENV & set(console(state, "local.predict_env", *BOTH))
    assert "bigquery.googleapis.com" in console(state, "local.apis", *BOTH)
    out = outputs(state)
    assert out["bigquery_table"] == TABLE and out["bigquery_dataset"] == "scorer"
    assert out["results_topic"] == TOPIC
    assert out["results_subscription"] == f"projects/{PROJECT}/subscriptions/scorer-results-example"
    # each independently of the other
    state = applied(mirror, tmp_path / "bq", "bigquery_enabled=true")
    push = console(state, "local.push_env", "bigquery_enabled=true")
    assert "BIGQUERY_TABLE" in push and "RESULTS_TOPIC" not in push
    assert not set(RESULTS_ONLY) & existing(state)
    state = applied(mirror, tmp_path / "results", "results_topic_enabled=true")
    push = console(state, "local.push_env", "results_topic_enabled=true")
    assert "RESULTS_TOPIC" in push and not {"BIGQUERY_TABLE", "BIGQUERY_LOCATION", "OUTPUT_FORMAT"} & set(push)
    assert not set(BIGQUERY_ONLY) & existing(state)


def test_the_services_start_once_they_may_load_and_publish(mirror, tmp_path):
    state = applied(mirror, tmp_path, *BOTH)
    resources = {r["name"]: r for r in json.loads((state / "terraform.tfstate").read_text())["resources"]}
    for name, grants in (
        ("google_cloud_run_v2_service__services", ("runtime_edits_predictions", "runtime_runs_bigquery_jobs",
                                                   "runtime_publishes_results")),
        ("google_cloud_run_v2_job__shard", ("shard_edits_predictions", "shard_runs_bigquery_jobs",
                                            "shard_publishes_results")),
    ):
        for instance in resources[name]["instances"]:
            deps = set(instance["dependencies"])
            assert "terraform_data.google_bigquery_table__predictions" in deps, name
            for grant in grants:
                assert any(d.endswith(f"__{grant}") for d in deps), (name, grant)


def test_every_setting_is_one_the_binary_reads(mirror, tmp_path):
    """BIGQUERY_TABLE, BIGQUERY_LOCATION, OUTPUT_FORMAT and RESULTS_TOPIC are
    read by `scorer serve` and `scorer shard` (their outputs' arguments,
    app/src/config/output.rs), like every other setting."""
    state = applied(mirror, tmp_path, *BOTH)
    outputs_args = rust_envs("config/output.rs")
    assert LOAD_ENV <= outputs_args
    serve = rust_envs("config/args.rs", "config/models.rs") | outputs_args
    shard = rust_envs("config/shard.rs") | outputs_args
    assert set(console(state, "local.push_env", *BOTH)) - serve == {"RUST_LOG"}
    assert set(console(state, "local.shard_env", *BOTH)) - shard == {"RUST_LOG", "GOOGLE_CLOUD_PROJECT"}


# --- enabled: who may do what ---------------------------------------------------------------


def _grants_to(state: Path, member: str) -> set[tuple]:
    found = set()
    for name, inputs in instances(state).items():
        if "_iam_" not in name:
            continue
        for i in inputs:
            if i.get("member") == member:
                target = i.get("bucket") or i.get("dataset_id") or i.get("topic") or i.get("name") or \
                    i.get("service_account_id") or i.get("project")
                found.add((name.split("__")[0], target, i["role"]))
    return found


def test_the_accounts_may_append_to_that_dataset_run_jobs_and_publish_to_that_topic_only(mirror, tmp_path):
    state = applied(mirror, tmp_path, *BOTH)
    for member in (RUNTIME_MEMBER, SHARD_MEMBER):
        new = {g for g in _grants_to(state, member) if g[2].startswith(("roles/bigquery.", "roles/pubsub."))}
        assert new == {
            ("google_bigquery_dataset_iam_member", "scorer", "roles/bigquery.dataEditor"),
            ("google_project_iam_member", PROJECT, "roles/bigquery.jobUser"),
            ("google_pubsub_topic_iam_member", TOPIC, "roles/pubsub.publisher"),
        }, member
    # without the shard job, only the push service's account
    settings = (*BOTH, "shard_job_enabled=false")
    state = applied(mirror, tmp_path / "noshard", *settings)
    assert not {n for n in existing(state) if "__shard_" in n}
    assert _grants_to(state, SHARD_MEMBER) == set()
    assert {g[2] for g in _grants_to(state, RUNTIME_MEMBER)} >= {
        "roles/bigquery.dataEditor", "roles/bigquery.jobUser", "roles/pubsub.publisher"}
    assert console(state, "local.push_env", *settings)["BIGQUERY_TABLE"] == TABLE


def test_the_grants_are_scoped_in_the_configuration(tf):
    """dataEditor on the dataset resource (never the project), publisher on the
    results topic, jobUser the only project-level BigQuery role, with its reason."""
    for rtype, name, body in tf.all_resources():
        role = body.get("role", "")
        if role.startswith("roles/bigquery.") and role != "roles/bigquery.jobUser":
            assert rtype == "google_bigquery_dataset_iam_member", name
            assert body["dataset_id"] == "${google_bigquery_dataset.predictions[0].dataset_id}", name
        if role == "roles/bigquery.jobUser":
            assert rtype == "google_project_iam_member" and body["project"] == "${var.project_id}", name
        if rtype == "google_pubsub_topic_iam_member" and name.endswith("_publishes_results"):
            assert body["topic"] == "${google_pubsub_topic.results[0].id}" and role == "roles/pubsub.publisher"
    members = {name: body["member"] for name, body in tf.resources["google_project_iam_member"].items()
               if body["role"] == "roles/bigquery.jobUser"}
    assert members == {"runtime_runs_bigquery_jobs": "${google_service_account.runtime.member}",
                       "shard_runs_bigquery_jobs": "${google_service_account.shard[0].member}"}
    text = tf.text["bigquery.tf"]
    reason = text[:text.index('resource "google_project_iam_member" "runtime_runs_bigquery_jobs"')]
    assert "bigquery.jobs.create" in reason and "only on the" in reason
    counts = {name: tf.resource(rtype, name)["count"] for rtype, name in (
        ("google_bigquery_dataset_iam_member", "shard_edits_predictions"),
        ("google_project_iam_member", "shard_runs_bigquery_jobs"),
        ("google_pubsub_topic_iam_member", "shard_publishes_results"))}
    assert counts == {
        "shard_edits_predictions": "${var.bigquery_enabled && var.shard_job_enabled ? 1 : 0}",
        "shard_runs_bigquery_jobs": "${var.bigquery_enabled && var.shard_job_enabled ? 1 : 0}",
        "shard_publishes_results": "${var.results_topic_enabled && var.shard_job_enabled ? 1 : 0}",
    }


# --- the dataset and the table ------------------------------------------------------------------


def test_the_table_is_partitioned_by_day_of_scored_at_and_protected_like_the_services(tf):
    table = tf.resource("google_bigquery_table", "predictions")
    assert block(table, "time_partitioning") == {"type": "DAY", "field": "scored_at"}
    assert table["deletion_protection"] == "${var.deletion_protection}"
    assert table["table_id"] == "${var.bigquery_table_id}"
    assert table["schema"] == "${jsonencode(local.predictions_schema)}"
    dataset = tf.resource("google_bigquery_dataset", "predictions")
    assert dataset["location"] == "${local.bigquery_location}"
    assert dataset["delete_contents_on_destroy"] is False
    assert "access" not in dataset, "access is granted with IAM members, none public"


def test_the_schema_is_the_scl_files_columns_the_prediction_and_its_provenance(mirror, tmp_path):
    state = applied(mirror, tmp_path, "bigquery_enabled=true")
    table = instances(state)["google_bigquery_table__predictions"][0]
    schema = json.loads(table["schema"])
    assert all(c["mode"] == "NULLABLE" for c in schema)
    columns = [(c["name"], c["type"]) for c in schema]
    assert columns == [(name, "STRING") for name in scl_columns()] + APPENDED
    # the file's own names (flexible column names), and why
    assert {"Fecha-I", "AÑO", "SIGLAORI"} <= {name for name, _ in columns}
    text = (ROOT / "terraform" / "bigquery.tf").read_text(encoding="utf-8")
    assert "flexible column names" in text and "Fecha_I" in text
    assert (table["project"], table["dataset_id"], table["table_id"]) == (PROJECT, "scorer", "predictions")


def test_the_input_columns_are_a_variable_defaulting_to_the_raw_scl_layout(tf, mirror, tmp_path):
    """bigquery_input_columns: the raw layout by default (data/README.md), any
    other files' columns when set (the shipped 5-column file's, say), always
    followed by the appended columns."""
    assert tf.default("bigquery_input_columns") == scl_columns()
    assert len(tf.variables["bigquery_input_columns"]["description"]) > 40
    setting = "bigquery_input_columns=" + json.dumps(SHIPPED_COLUMNS)
    state = applied(mirror, tmp_path, "bigquery_enabled=true", setting)
    schema = json.loads(instances(state)["google_bigquery_table__predictions"][0]["schema"])
    assert [(c["name"], c["type"]) for c in schema] == [(n, "STRING") for n in SHIPPED_COLUMNS] + APPENDED
    assert all(c["mode"] == "NULLABLE" for c in schema)
    header = (ROOT / "data" / "scl_flights_2017.csv").open(encoding="utf-8").readline().strip().split(",")
    assert header == SHIPPED_COLUMNS, "the shipped file's columns changed: update the docs that name them"


@pytest.mark.parametrize("columns,message", [
    ([], "must name at least one column"),
    (["split", ""], "no name may be empty"),
    (["MES", "OPERA", "MES"], "must be unique"),
    (["MES", "mes"], "must be unique"),
    (["OPERA", "probability"], "must not name probability"),
    (["OPERA", "Row_Number"], "must not name probability"),
])
def test_input_columns_that_cannot_make_the_table_are_refused_at_plan(mirror, columns, message):
    r = plan(mirror, "bigquery_enabled=true", "bigquery_input_columns=" + json.dumps(columns))
    assert r.returncode != 0 and message in said(r), said(r)


def test_the_docs_say_the_input_columns_must_match_the_files():
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    section = deploy[deploy.index("## BigQuery and a results topic"):]
    section = " ".join(section[:section.index("\n## ", 1)].split())
    assert "bigquery_input_columns" in section and "OUTPUT_FORMAT" in section
    assert "`split, OPERA, TIPOVUELO, MES, atraso_15`" in section
    example = (ROOT / "terraform" / "terraform.tfvars.example").read_text(encoding="utf-8")
    assert re.search(r"^# bigquery_input_columns\s+= " + re.escape(json.dumps(SHIPPED_COLUMNS)), example, re.M)


@pytest.mark.parametrize("bucket_location,expected", [("", REGION), ("EU", "EU"), ("us", "US"),
                                                      ("US-CENTRAL1", "us-central1")])
def test_the_dataset_is_in_the_buckets_location_as_bigquery_spells_it(mirror, tmp_path, bucket_location, expected):
    settings = ("bigquery_enabled=true", f"bucket_location={bucket_location}")
    state = applied(mirror, tmp_path, *settings)
    assert instances(state)["google_bigquery_dataset__predictions"][0]["location"] == expected
    assert console(state, "local.push_env", *settings)["BIGQUERY_LOCATION"] == expected


def test_a_bucket_location_bigquery_does_not_have_is_refused_at_plan(mirror):
    for location in ("ASIA", "EUR4"):
        r = plan(mirror, "bigquery_enabled=true", f"bucket_location={location}")
        assert r.returncode != 0 and "BigQuery has no location" in said(r), location
    # and without BigQuery such buckets are fine
    assert plan(mirror, "bucket_location=EUR4").returncode == 0


def test_names_follow_the_service_name_or_the_variables(mirror, tmp_path):
    settings = ("bigquery_enabled=true", "results_topic_enabled=true", "service_name=fd-scorer")
    state = applied(mirror, tmp_path, *settings)
    push = console(state, "local.push_env", *settings)
    assert push["BIGQUERY_TABLE"] == f"{PROJECT}.fd_scorer.predictions"
    assert push["RESULTS_TOPIC"] == f"projects/{PROJECT}/topics/fd-scorer-results"
    settings = ("bigquery_enabled=true", "bigquery_dataset_id=analytics", "bigquery_table_id=scl-delays")
    state = applied(mirror, tmp_path / "named", *settings)
    assert console(state, "local.push_env", *settings)["BIGQUERY_TABLE"] == f"{PROJECT}.analytics.scl-delays"
    for bad in ("bigquery_table_id=a.b", "bigquery_dataset_id=my-dataset"):
        r = plan(mirror, "bigquery_enabled=true", bad)
        assert r.returncode != 0 and "must be" in said(r), bad


# --- the results topic --------------------------------------------------------------------------


def test_the_results_topic_has_an_example_pull_subscription(tf):
    topic = tf.resource("google_pubsub_topic", "results")
    assert topic["name"] == "${var.service_name}-results" and topic["count"] == "${local.results_enabled}"
    sub = tf.resource("google_pubsub_subscription", "results_example")
    assert sub["name"] == "${var.service_name}-results-example"
    assert sub["topic"] == "${google_pubsub_topic.results[0].id}"
    assert sub["message_retention_duration"] == "604800s" and sub["ack_deadline_seconds"] == 60
    assert "push_config" not in sub, "a pull subscription"
    assert block(sub, "expiration_policy")["ttl"] == ""
    text = (ROOT / "terraform" / "results.tf").read_text(encoding="utf-8")
    assert "example consumer" in text.lower()


def test_deploy_md_documents_the_new_variables():
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    assert "## BigQuery and a results topic" in deploy
    section = deploy[deploy.index("## BigQuery and a results topic"):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    for name in ("bigquery_enabled", "bigquery_dataset_id", "bigquery_table_id", "results_topic_enabled",
                 "BIGQUERY_TABLE", "BIGQUERY_LOCATION", "RESULTS_TOPIC", "roles/bigquery.jobUser",
                 "roles/bigquery.dataEditor", "roles/pubsub.publisher"):
        assert name in section, name
