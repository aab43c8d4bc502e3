"""The model registry in the output bucket (_models/: versions, fit records,
aliases that the push service and operators replace with a generation
precondition): what Terraform gives it. The output bucket keeps every
version, no lifecycle rule can delete a live registry object while the old
outputs still age out, only the registry's noncurrent versions are kept
long, the push service may replace objects under _models/ only, the predict
service reads and creates there, and the registry's settings reach the
services that read them.

The rules and grants are read with python-hcl2; every expression in them
(for_each, locals, variables) and the environments are evaluated by the
real terraform on the mirror (tf_mirror.py), so what is checked is what a
plan would send."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, block
from script_harness import PROJECT, applied, console, instances, plan, said, state_dependencies, write_mirror
from test_shard_job import rust_envs

OUTPUT = f"{PROJECT}-scorer-output"
RUNTIME_MEMBER = f"serviceAccount:scorer-run@{PROJECT}.iam.gserviceaccount.com"
PREDICT_MEMBER = f"serviceAccount:scorer-predict@{PROJECT}.iam.gserviceaccount.com"
SHARD_MEMBER = f"serviceAccount:scorer-shard@{PROJECT}.iam.gserviceaccount.com"
REGISTRY = "_models/"
REGISTRY_CONDITION = 'resource.name.startsWith("projects/_/buckets/${local.output_bucket}/objects/_models/")'
MODEL_ENV = {"MODEL", "MODEL_ROUTES", "MODEL_REFRESH_SECONDS"}
FIT_ENV = {"TRAINING_PREFIX", "PROMOTE"}
# roles that hold storage.objects.delete (so may replace an object)
DELETING_ROLES = {"roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin"}

# The registry's names (app/src/layout.rs, app/src/registry/mod.rs): a model
# name and an alias are letters, digits, '.', '_', '-' (starting with a letter
# or a digit), a version 16 lower-case hex digits.
SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
LEAF = rf"(?:[0-9a-f]{{16}}(?:\.fit)?\.json|@{SEGMENT})"
REGISTRY_NAMES = [
    "_models/scl-flight-delay/0123456789abcdef.json",
    "_models/scl-flight-delay/0123456789abcdef.fit.json",
    "_models/scl-flight-delay/@production",
    "_models/scl-flight-delay/@staging",
    # aliases named like the outputs' files: a bare ".csv" suffix would match them
    "_models/penguins/@x.csv",
    "_models/penguins/@predictions.parquet",
    "_models/curves/@roc.svg",
    "_models/manifest.json/@curves.json",
]
G = "1700000000000000"
OUTPUT_NAMES = [
    f"flights.csv/{G}/predictions.csv",
    f"flights.csv/{G}/predictions.2.csv",
    f"flights.csv/{G}/predictions.jsonl",
    f"flights.csv/{G}/predictions.parquet",
    f"flights.csv/{G}/errors.csv",
    f"flights.csv/{G}/manifest.json",
    f"flights.csv/{G}/bigquery.json",
    f"flights.csv/{G}/results.json",
    f"flights.csv/{G}/predictions-00003-of-00008.csv",
    f"flights.csv/{G}/curves/0123456789abcdef/roc.svg",
    f"flights.csv/{G}/curves/0123456789abcdef/curves.json",
    f"training/penguins/p.csv/{G}/manifest.json",
    f"training/penguins/p.csv/{G}/curves/0123456789abcdef/precision_recall.svg",
    f"training/penguins/p.csv/{G}/promoted.json",
    f"2024/05/Flights.CSV/{G}/predictions.csv",
    f"~odd name.csv/{G}/manifest.json",
    f"_by-hash/{'ab' * 32}/{G}/predictions.csv",
    f"_leases/flights.csv/{G}/000001.json",
    f"_shards/flights.csv/{G}/dispatch-000001.json",
    # an input name that starts with a non-ASCII character: by file name
    f"ñandú.csv/{G}/predictions.csv",
    f"日本/vuelos.csv/{G}/manifest.json",
    f"Ñuble.csv/{G}/curves/0123456789abcdef/calibration.svg",
]
# The documented gap (docs/DEPLOY.md, "Model registry"): such an input's shard
# predictions and renumbered retries are matched by neither list.
GAP_NAMES = [f"ñandú.csv/{G}/predictions-00001-of-00002.csv", f"ñandú.csv/{G}/errors.2.csv"]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("registry") / "tf")


# --- the output bucket's rules, as Terraform evaluates them ------------------------------------


def _hcl(value: str) -> str:
    """An expression as python-hcl2 prints it ("${a ? ['${b}'] : []}"), back in HCL."""
    assert value.startswith("${") and value.endswith("}"), value
    return re.sub(r"'\$\{([^{}']*)\}'", r"\1", value[2:-1])


def _evaluate(mirror: Path, exprs: list[str], variables: tuple[str, ...]) -> list:
    """Every expression at once, by the real terraform (terraform console)."""
    return console(mirror, "[" + ", ".join(exprs) + "]", *variables) if exprs else []


def output_rules(tf, mirror: Path, *variables: str) -> list[dict]:
    """The output bucket's lifecycle rules as the plan would send them: dynamic
    blocks expanded by their for_each, every expression evaluated."""
    bucket = tf.resource("google_storage_bucket", "output")
    static = [(r, None) for r in bucket.get("lifecycle_rule", [])]
    dynamic = [d["lifecycle_rule"] for d in bucket.get("dynamic", []) if "lifecycle_rule" in d]
    each = _evaluate(mirror, [_hcl(d["for_each"]) for d in dynamic], variables)
    expanded = static + [(block(d, "content"), value) for d, values in zip(dynamic, each) for value in values]
    rules, exprs = [], []
    for content, value in expanded:
        condition = dict(block(content, "condition"))
        for key, v in condition.items():
            if isinstance(v, str) and v.startswith("${"):
                if v == "${lifecycle_rule.value}":
                    condition[key] = value
                else:
                    exprs.append((len(rules), key, _hcl(v)))
        rules.append({"action": block(content, "action")["type"], "condition": condition})
    for (i, key, _), v in zip(exprs, _evaluate(mirror, [e for _, _, e in exprs], variables)):
        rules[i]["condition"][key] = v
    return rules


def _applies(rule: dict, name: str, live: bool) -> bool:
    """Whether Cloud Storage applies `rule` to object `name`, live or noncurrent:
    every condition must hold; a rule of noncurrent time concerns noncurrent
    versions only."""
    c = rule["condition"]
    state = c.get("with_state", "ANY")
    if (state == "LIVE" and not live) or (state == "ARCHIVED" and live):
        return False
    if live and {"days_since_noncurrent_time", "num_newer_versions", "noncurrent_time_before"} & set(c):
        return False
    if c.get("matches_prefix") is not None and not any(name.startswith(p) for p in c["matches_prefix"]):
        return False
    if c.get("matches_suffix") is not None and not any(name.endswith(s) for s in c["matches_suffix"]):
        return False
    return True


def deleting(rules: list[dict], name: str, live: bool) -> list[dict]:
    return [r for r in rules if r["action"] == "Delete" and _applies(r, name, live)]


def _prefix_reaches_registry(prefix: str) -> bool:
    return prefix.startswith(REGISTRY) or REGISTRY.startswith(prefix)


def _suffix_reaches_registry(suffix: str) -> bool:
    """Whether some registry name (_models/<name>/<leaf>) ends with `suffix`.
    Only a suffix that starts with "/" can be shown not to: then it is "/<leaf>"
    or "/<name>/<leaf>" of some registry name, or of none."""
    if not suffix.startswith("/"):
        return True  # an alias may end in anything a name may
    parts = suffix[1:].split("/")
    if len(parts) == 1:
        return re.fullmatch(LEAF, parts[0]) is not None
    if len(parts) == 2:
        return re.fullmatch(SEGMENT, parts[0]) is not None and re.fullmatch(LEAF, parts[1]) is not None
    return False  # "_models" is never preceded by "/"


def may_delete_live_registry_objects(rule: dict) -> bool:
    c = rule["condition"]
    if rule["action"] != "Delete" or c.get("with_state", "ANY") == "ARCHIVED":
        return False
    if {"days_since_noncurrent_time", "num_newer_versions", "noncurrent_time_before"} & set(c):
        return False
    prefixes, suffixes = c.get("matches_prefix"), c.get("matches_suffix")
    return (prefixes is None or any(map(_prefix_reaches_registry, prefixes))) and \
        (suffixes is None or any(map(_suffix_reaches_registry, suffixes)))


def test_the_output_bucket_keeps_every_version(tf):
    """Versioning keeps each generation of an alias (history, audit), and the
    bucket's checkov skips say nothing about versioning (it is on)."""
    out = tf.resource("google_storage_bucket", "output")
    assert block(out, "versioning")["enabled"] is True
    assert block(out, "soft_delete_policy")["retention_duration_seconds"] >= 604800
    text = tf.text["storage.tf"]
    output_block = text[text.index('resource "google_storage_bucket" "output"'):]
    output_block = output_block[:output_block.index("\n}\n")]
    assert re.findall(r"#checkov:skip=(CKV\w+)", output_block) == ["CKV_GCP_62"]
    assert tf.default("model_history_days") == 365


@pytest.mark.parametrize("variables", [(), ("output_retention_days=1",), ("model_history_days=0",),
                                       ("output_retention_days=0", "lease_retention_days=1")])
def test_no_rule_can_delete_a_live_registry_object(tf, mirror, variables):
    """Whatever the retention settings: every Delete rule on live objects names
    what it deletes by a prefix or a suffix that no registry name can have,
    and in particular none matches the registry's names, oddly named aliases
    included."""
    rules = output_rules(tf, mirror, *variables)
    live = [r for r in rules if r["action"] == "Delete" and r["condition"].get("with_state") != "ARCHIVED"]
    assert live, "no rule deletes live objects: did the reader lose them?"
    for rule in rules:
        assert not may_delete_live_registry_objects(rule), rule
    for name in REGISTRY_NAMES:
        assert re.fullmatch(rf"_models/{SEGMENT}/{LEAF}", name), name
        assert deleting(rules, name, live=True) == [], name


def test_old_outputs_still_age_out(tf, mirror):
    """Everything else the service writes is matched by a rule on live objects,
    output_retention_days after it was written (leases and shard records by
    their own, shorter rules too); with output_retention_days = 0 only those."""
    rules = output_rules(tf, mirror)
    for name in OUTPUT_NAMES:
        ages = [r["condition"]["age"] for r in deleting(rules, name, live=True)]
        assert 90 in ages, name
    assert {r["condition"]["age"] for r in deleting(rules, f"_leases/a.csv/{G}/000001.json", live=True)} == {7, 90}
    for name in GAP_NAMES:
        assert deleting(rules, name, live=True) == [], f"{name}: the gap is closed, update docs/DEPLOY.md"
    kept = output_rules(tf, mirror, "output_retention_days=0")
    assert deleting(kept, f"flights.csv/{G}/predictions.csv", live=True) == []
    assert [r["condition"]["age"] for r in deleting(kept, f"_shards/a.csv/{G}/dispatch-000001.json", live=True)] == [7]


def test_the_prefixes_and_file_names_are_the_layout_s(tf, mirror):
    """The premises of the two lists, in app/src/layout.rs: an input name that
    starts with "_" leads no output name (its outputs go under _by-hash/), and
    the file names are those the service writes."""
    layout = (ROOT / "app" / "src" / "layout.rs").read_text(encoding="utf-8")
    assert "!name.starts_with('_')" in layout and 'HASHED_PREFIX: &str = "_by-hash/"' in layout
    for prefix in ("_leases/", "_shards/", "_models/"):
        assert f'"{prefix}"' in layout, prefix
    for written in ('"{}manifest.json"', '"{}bigquery.json"', '"{}promoted.json"', '"{}results.json"',
                    '"{}curves/{}/{file}"', "roc.svg, precision_recall.svg, calibration.svg, curves.json"):
        assert written in layout, written
    prefixes, names = _evaluate(mirror, ["local.outputs_by_prefix", "local.outputs_by_name"], ())
    ascii_but_underscore = [chr(c) for c in range(0x20, 0x7f) if chr(c) != "_"]
    assert sorted(prefixes) == sorted(["_by-hash/", "_leases/", "_shards/", *ascii_but_underscore])
    assert len(set(prefixes)) == len(prefixes) == 97
    assert all(n.startswith("/") for n in names) and len(set(names)) == len(names) == 12


def test_the_rules_fit_cloud_storage_s_limits(tf, mirror):
    """At most 100 rules per bucket, and 1,000 matchesPrefix and matchesSuffix
    values across all of them."""
    rules = output_rules(tf, mirror)
    assert len(rules) <= 100
    names = sum(len(r["condition"].get("matches_prefix") or []) + len(r["condition"].get("matches_suffix") or [])
                for r in rules)
    assert 200 < names <= 1000


@pytest.mark.parametrize("history", [365, 30, 0])
def test_only_the_registry_s_noncurrent_versions_are_kept(tf, mirror, history):
    """A replaced alias generation stays model_history_days (0: for ever);
    any other noncurrent version (a deleted lease, an aged-out output) a day."""
    rules = output_rules(tf, mirror, f"model_history_days={history}")
    for name in REGISTRY_NAMES:
        days = [r["condition"]["days_since_noncurrent_time"] for r in deleting(rules, name, live=False)]
        assert days == ([history] if history else []), name
    for name in OUTPUT_NAMES:
        days = [r["condition"]["days_since_noncurrent_time"] for r in deleting(rules, name, live=False)]
        assert min(days) == 1, name
    for name in GAP_NAMES:
        days = [r["condition"]["days_since_noncurrent_time"] for r in deleting(rules, name, live=False)]
        assert days == ([history] if history else []), name


# --- who may write the registry ----------------------------------------------------------------


def _bucket_grants(state: Path, member: str) -> set[tuple[str, str, str]]:
    return {(name.split("__", 1)[1], i.get("bucket"), i["role"])
            for name, inputs in instances(state).items() if name.startswith("google_storage_bucket_iam_member__")
            for i in inputs if i.get("member") == member}


def test_the_push_service_may_replace_objects_under_models_only(tf, mirror, tmp_path):
    grant = tf.resource("google_storage_bucket_iam_member", "runtime_writes_models")
    assert grant["bucket"] == "${google_storage_bucket.output.name}"
    assert grant["member"] == "${google_service_account.runtime.member}"
    assert grant["role"] == "roles/storage.objectUser" and "count" not in grant and "for_each" not in grant
    condition = block(grant, "condition")
    assert condition["expression"] == REGISTRY_CONDITION and condition["title"]
    assert console(mirror, "local.output_bucket") == OUTPUT
    # every role of the account that may delete is that one, under that condition
    for rtype, name, body in tf.all_resources():
        if "google_service_account.runtime." in str(body.get("member", "")) and body.get("role") in DELETING_ROLES:
            assert (rtype, name) == ("google_storage_bucket_iam_member", "runtime_writes_models")
    # as the real terraform makes it: there by default, beside the create-only grants
    state = applied(mirror, tmp_path)
    assert _bucket_grants(state, RUNTIME_MEMBER) >= {
        ("runtime_writes_models", OUTPUT, "roles/storage.objectUser"),
        ("runtime_reads_output", OUTPUT, "roles/storage.objectViewer"),
        ("runtime_creates_output", OUTPUT, "roles/storage.objectCreator"),
    }
    deps = state_dependencies(state)["terraform_data.google_cloud_run_v2_service__services"]
    for needed in ("runtime_writes_models", "predict_reads_models", "predict_creates_models"):
        assert f"terraform_data.google_storage_bucket_iam_member__{needed}" in deps, needed


def test_the_predict_service_reads_and_creates_under_models_always(tf, mirror, tmp_path):
    """It stores its start-up model and seeds @production at every start
    (creating only: it never replaces an alias), and follows the aliases it
    serves; with no training_data_uri too."""
    for name, role in (("predict_reads_models", "roles/storage.objectViewer"),
                       ("predict_creates_models", "roles/storage.objectCreator")):
        grant = tf.resource("google_storage_bucket_iam_member", name)
        assert grant["role"] == role and grant["member"] == "${google_service_account.predict.member}"
        assert "count" not in grant and block(grant, "condition")["expression"] == REGISTRY_CONDITION
    state = applied(mirror, tmp_path)
    assert tf.default("training_data_uri") == "" and tf.default("model_uri") == ""
    assert _bucket_grants(state, PREDICT_MEMBER) == {
        ("predict_reads_models", OUTPUT, "roles/storage.objectViewer"),
        ("predict_creates_models", OUTPUT, "roles/storage.objectCreator"),
    }


def test_the_job_s_tasks_read_the_registry_with_their_output_grant(tf, mirror, tmp_path):
    """Each execution names MODEL_NAME and MODEL_VERSION; the tasks read
    _models/<name>/<hex>.json with their unconditional objectViewer on the
    output bucket, and write nothing there."""
    grant = tf.resource("google_storage_bucket_iam_member", "shard_reads_output")
    assert grant["role"] == "roles/storage.objectViewer" and "condition" not in grant
    state = applied(mirror, tmp_path)
    assert not {role for _, _, role in _bucket_grants(state, SHARD_MEMBER)} & DELETING_ROLES
    assert ("shard_reads_output", OUTPUT, "roles/storage.objectViewer") in _bucket_grants(state, SHARD_MEMBER)
    text = tf.text["cloud_run_job.tf"]
    assert "MODEL_NAME" in text and "_models/<name>/<hex>.json" in text
    assert "passes a fitted model to the tasks as MODEL_URI" not in text


# --- the settings ------------------------------------------------------------------------------

SET = ("default_model=scl-flight-delay@production",
       'model_routes={"penguins/"="penguins@staging","flights/2024/"="scl-flight-delay:0123456789abcdef"}',
       "model_refresh_seconds=5", "training_prefix=training/", "promote=auto")


def test_the_settings_are_absent_unless_set(mirror, tmp_path):
    state = applied(mirror, tmp_path)
    push, predict, shard = console(state, "[local.push_env, local.predict_env, local.shard_env]")
    for env in (push, predict):
        assert env["MODEL_REFRESH_SECONDS"] == "30", "the binary's own default, said once"
        assert not (MODEL_ENV - {"MODEL_REFRESH_SECONDS"} | FIT_ENV) & set(env)
    assert not (MODEL_ENV | FIT_ENV) & set(shard), "each execution names its model"


def test_the_settings_reach_the_services_that_read_them(mirror, tmp_path):
    state = applied(mirror, tmp_path, *SET)
    push, predict, shard = console(state, "[local.push_env, local.predict_env, local.shard_env]", *SET)
    registry = {
        "MODEL": "scl-flight-delay@production",
        # prefix=ref, sorted by prefix (the binary orders them longest first)
        "MODEL_ROUTES": "flights/2024/=scl-flight-delay:0123456789abcdef,penguins/=penguins@staging",
        "MODEL_REFRESH_SECONDS": "5",
    }
    assert {k: push.get(k) for k in MODEL_ENV | FIT_ENV} == {**registry, "TRAINING_PREFIX": "training/",
                                                            "PROMOTE": "auto"}
    assert {k: predict.get(k) for k in MODEL_ENV | FIT_ENV} == {**registry, "TRAINING_PREFIX": None,
                                                               "PROMOTE": None}
    assert not (MODEL_ENV | FIT_ENV) & set(shard)
    # PROMOTE goes with TRAINING_PREFIX, its default with it
    only = ("training_prefix=training",)
    push = console(applied(mirror, tmp_path / "fit", *only), "local.push_env", *only)
    assert (push["TRAINING_PREFIX"], push["PROMOTE"]) == ("training", "staging")
    assert "MODEL" not in push and "MODEL_ROUTES" not in push
    # ... and the names are the ones `scorer serve` reads (app/src/config/models.rs)
    assert MODEL_ENV | FIT_ENV <= rust_envs("config/models.rs")


@pytest.mark.parametrize("setting,message", [
    ("promote=always", 'promote must be "staging" or "auto"'),
    ("promote=Staging", 'promote must be "staging" or "auto"'),
    ("promote=", 'promote must be "staging" or "auto"'),
    ("default_model=no/such", "default_model must be empty, name, name@alias or name:version"),
    ("default_model=m:v1", "default_model must be empty, name, name@alias or name:version"),
    ('model_routes={"a,b/"="m"}', "model_routes maps a non-empty prefix"),
    ('model_routes={"a/"="m@"}', "model_routes maps a non-empty prefix"),
    ("training_prefix=_models/", "training_prefix must be empty or a prefix"),
    ("model_refresh_seconds=0", "model_refresh_seconds must be a whole number >= 1"),
    ("model_history_days=-1", "model_history_days must be a whole number >= 0"),
])
def test_the_plan_refuses_what_the_binary_would(mirror, setting, message):
    r = plan(mirror, setting)
    assert r.returncode != 0 and message in said(r), said(r)[-600:]


def test_a_route_under_the_training_prefix_fails_the_plan(mirror):
    """The binary refuses it at start (those inputs are fitted, not scored)."""
    r = plan(mirror, "training_prefix=training", 'model_routes={"training/penguins/"="penguins"}')
    assert r.returncode != 0 and "A model_routes prefix lies under training_prefix (training/)" in said(r)
    for ok in (("promote=auto",), ("training_prefix=training", 'model_routes={"trainingset/"="m"}'), SET):
        r = plan(mirror, *ok)
        assert r.returncode == 0, said(r)[-600:]


def test_the_example_and_the_docs_name_every_setting(tf):
    example = (ROOT / "terraform" / "terraform.tfvars.example").read_text(encoding="utf-8")
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    section = deploy[deploy.index("\n## Model registry\n"):]
    section = section[:section.index("\n## ", 4)]
    for name in ("default_model", "model_routes", "model_refresh_seconds", "training_prefix", "promote",
                 "model_history_days"):
        assert len(tf.variables[name]["description"]) > 40, name
        assert re.search(rf"^# {name} +=", example, re.M), name
        assert f"`{name}`" in section, name
    for said_there in ("objectUser", "versioning", "predictions-i-of-N.csv", "_by-hash/"):
        assert said_there.lower() in " ".join(section.split()).lower(), said_there
