"""trigger = "pubsub" | "eventarc" (terraform/eventarc.tf): what each creates,
how the push service checks each one's tokens, and the trade-off DEPLOY.md
states, checked against the provider schema. What Terraform itself decides
(which resources exist, the values the service is given, the implicit moves
of an existing deployment, what setup.sh and destroy.sh do) runs on the real
terraform over the mirror (tf_mirror.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import tf_schema
from conftest import ROOT, block, need_env_path
from script_harness import (PROJECT, REGION, Env, applied, console, instances, ok, plan, said, terraform,
                            write_mirror)

EVENTS_SA = f"scorer-events@{PROJECT}.iam.gserviceaccount.com"
PUSH_SA = f"scorer-push@{PROJECT}.iam.gserviceaccount.com"
PUSH_URL = "https://scorer-abcdefghij-ew.a.run.app"  # the mirror's uri of the push service
GCS_AGENT = "serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com"
PUBSUB_ONLY = ("google_pubsub_topic__input_events", "google_pubsub_topic__dead_letters",
               "google_pubsub_subscription__push", "google_pubsub_subscription__dead_letters",
               "google_storage_notification__input_finalize", "google_service_account__push",
               "google_pubsub_topic_iam_member__gcs_publishes_input_events",
               "google_pubsub_topic_iam_member__pubsub_agent_publishes_dead_letters",
               "google_pubsub_subscription_iam_member__pubsub_agent_acks_push",
               "google_cloud_run_v2_service_iam_member__push_invoker",
               "google_service_account_iam_member__pubsub_agent_mints_push_tokens",
               "google_monitoring_alert_policy__dead_letters")
EVENTARC_ONLY = ("google_eventarc_trigger__input_finalized", "google_service_account__events",
                 "google_project_iam_member__events_receives_events", "google_project_iam_member__gcs_publishes_events",
                 "google_cloud_run_v2_service_iam_member__events_invoker",
                 "google_service_account_iam_member__pubsub_agent_mints_event_tokens")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("eventarc") / "tf")


def existing(tf: Path) -> set[str]:
    return {name for name, inputs in instances(tf).items() if inputs}


def test_trigger_is_pubsub_or_eventarc(mirror, tf):
    assert tf.default("trigger") == "pubsub"
    r = plan(mirror, "trigger=kafka")
    assert r.returncode != 0 and 'trigger must be "pubsub" or "eventarc"' in said(r)


def test_pubsub_builds_the_notification_topic_and_subscription(mirror, tmp_path):
    tf = applied(mirror, tmp_path)
    names = existing(tf)
    assert set(PUBSUB_ONLY) <= names and not set(EVENTARC_ONLY) & names
    push = console(tf, "local.push_env")
    assert push["PUSH_AUDIENCE"] == "scorer-push" and push["PUSH_SERVICE_ACCOUNT"] == PUSH_SA
    assert console(tf, "local.services.push.custom_audiences") == ["scorer-push"]
    assert "eventarc.googleapis.com" not in console(tf, "local.apis")


def test_eventarc_builds_the_trigger_and_none_of_the_pubsub_path(mirror, tmp_path):
    setting = "trigger=eventarc"
    tf = applied(mirror, tmp_path, setting)
    names = existing(tf)
    assert set(EVENTARC_ONLY) <= names
    assert not set(PUBSUB_ONLY) & names, f"left over: {set(PUBSUB_ONLY) & names}"
    assert "eventarc.googleapis.com" in console(tf, "local.apis", setting)
    trigger = instances(tf)["google_eventarc_trigger__input_finalized"][0]
    # a Cloud Storage trigger lives in its bucket's location
    assert trigger["location"] == REGION and trigger["service_account"] == EVENTS_SA
    # the trigger is made once the push service and every grant it needs exist
    deps = next(r for r in json.loads((tf / "terraform.tfstate").read_text())["resources"]
                if r["name"] == "google_eventarc_trigger__input_finalized")["instances"][0]["dependencies"]
    for needed in ("google_cloud_run_v2_service__services", "google_project_iam_member__events_receives_events",
                   "google_project_iam_member__gcs_publishes_events",
                   "google_cloud_run_v2_service_iam_member__events_invoker"):
        assert f"terraform_data.{needed}" in deps, needed
    out = {k: v["value"] for k, v in json.loads(terraform(tf, "output", "-json").stdout).items()}
    assert out["trigger"] == "eventarc" and out["eventarc_trigger"]
    assert out.get("topic") is None and out.get("dead_letter_subscription") is None
    assert out["push_request_timeout_seconds"] == 600
    # no dead letters: no alert on them and no chart of them
    titles = [c["title"] for c in console(tf, "local.dashboard_charts", setting)]
    assert "Dead letters waiting" not in titles and len(titles) == 7


def test_the_trigger_watches_finalized_objects_of_the_input_bucket_for_the_push_service(tf):
    trigger = tf.resource("google_eventarc_trigger", "input_finalized")
    criteria = {c["attribute"]: c["value"] for c in trigger["matching_criteria"]}
    assert criteria == {"type": "google.cloud.storage.object.v1.finalized",
                        "bucket": "${google_storage_bucket.input.name}"}
    run = block(block(trigger, "destination"), "cloud_run_service")
    assert run == {"service": '${google_cloud_run_v2_service.services["push"].name}',
                   "region": '${google_cloud_run_v2_service.services["push"].location}', "path": "/"}
    assert trigger["service_account"] == "${google_service_account.events[0].email}"
    assert trigger["location"] == "${local.eventarc_location}"
    assert tf.locals["eventarc_location"] == "${lower(local.bucket_location)}"
    assert trigger["count"] == "${local.eventarc_enabled}"


def test_the_trigger_account_receives_events_and_invokes_the_push_service_only(mirror, tmp_path):
    tf = applied(mirror, tmp_path, "trigger=eventarc")
    member = f"serviceAccount:{EVENTS_SA}"
    grants = {(name.split("__")[0], i.get("project") or i.get("name") or i.get("service_account_id"), i["role"])
              for name, inputs in instances(tf).items() if "_iam_" in name
              for i in inputs if i.get("member") == member}
    assert grants == {("google_project_iam_member", PROJECT, "roles/eventarc.eventReceiver"),
                      ("google_cloud_run_v2_service_iam_member", "scorer", "roles/run.invoker")}
    # nobody else may invoke the push service
    invokers = {i["member"] for name, inputs in instances(tf).items()
                if name.startswith("google_cloud_run_v2_service_iam_member") for i in inputs
                if i.get("name") == "scorer" and i["role"] == "roles/run.invoker"}
    assert invokers == {member}
    # the Cloud Storage service agent publishes (to Eventarc's own topic), and
    # Pub/Sub's agent may mint the trigger account's tokens (old projects)
    publishers = [i for i in instances(tf)["google_project_iam_member__gcs_publishes_events"]]
    assert [(p["member"], p["role"]) for p in publishers] == [(GCS_AGENT, "roles/pubsub.publisher")]
    minter = instances(tf)["google_service_account_iam_member__pubsub_agent_mints_event_tokens"][0]
    assert minter["service_account_id"] == f"projects/{PROJECT}/serviceAccounts/{EVENTS_SA}"
    assert minter["role"] == "roles/iam.serviceAccountTokenCreator"


def test_the_push_service_checks_eventarcs_tokens(mirror, tmp_path):
    """Eventarc signs as the trigger's account, for the service URL: until that
    URL is known (the service cannot name its own), no token passes."""
    tf = applied(mirror, tmp_path, "trigger=eventarc")
    push = console(tf, "local.push_env", "trigger=eventarc")
    assert push["PUSH_SERVICE_ACCOUNT"] == EVENTS_SA
    assert push["PUSH_AUDIENCE"] == "unset:eventarc_push_audience"
    assert console(tf, "local.services.push.custom_audiences", "trigger=eventarc") is None
    settings = ("trigger=eventarc", f"eventarc_push_audience={PUSH_URL}")
    terraform(tf, "apply", "-input=false", "-auto-approve", f"-var=project_id={PROJECT}", "-var=image_tag=t",
              *[f"-var={s}" for s in settings])
    assert console(tf, "local.push_env", *settings)["PUSH_AUDIENCE"] == PUSH_URL
    out = {k: v["value"] for k, v in json.loads(terraform(tf, "output", "-json").stdout).items()}
    assert out["push_audience"] == out["push_service_url"] == PUSH_URL
    r = plan(mirror, "trigger=eventarc", f"eventarc_push_audience={PUSH_URL}/")
    assert r.returncode != 0 and "without a path or trailing slash" in said(r)


def test_an_existing_deployment_keeps_its_pubsub_resources(mirror, tmp_path):
    """The Pub/Sub resources gained a count: a state written before (no instance
    keys) is moved to [0] by the real terraform, nothing destroyed or created."""
    tf = applied(mirror, tmp_path)
    state_file = tf / "terraform.tfstate"
    state = json.loads(state_file.read_text())
    for r in state["resources"]:
        if r["name"] in PUBSUB_ONLY:
            r.pop("each", None)
            for i in r["instances"]:
                i.pop("index_key", None)
    state["serial"] += 1
    state_file.write_text(json.dumps(state))
    r = terraform(tf, "plan", "-input=false", "-no-color", f"-var=project_id={PROJECT}", "-var=image_tag=t")
    moved = set(re.findall(r"# terraform_data\.(\w+) has moved to terraform_data\.\1\[0\]", r.stdout))
    assert moved == set(PUBSUB_ONLY)
    assert "No changes." in r.stdout or "0 to add, 0 to change, 0 to destroy" in r.stdout, r.stdout


# --- what DEPLOY.md says the hand-built subscription gives, from the provider schema ----------


@pytest.fixture(scope="module")
def schema() -> dict:
    package = need_env_path("SCORER_CDKTF_GOOGLE", "node_modules/@cdktf/provider-google (16.12.1)")
    cache = os.environ.get("SCORER_SCHEMA_CACHE")
    if cache:
        return tf_schema.cached_provider_schema(package, Path(cache))
    return tf_schema.load_provider_schema(package)


def paths(schema: dict, prefix: str = "") -> set[str]:
    """Every argument and block of a schema, as a.b.c paths."""
    out = {prefix + a for a in schema["attributes"]}
    for name, b in schema["blocks"].items():
        out.add(prefix + name)
        out |= paths(b["schema"], f"{prefix}{name}.")
    return out


def test_what_each_exposes_is_what_deploy_md_says(schema):
    subscription = paths(schema["resources"]["google_pubsub_subscription"])
    trigger = paths(schema["resources"]["google_eventarc_trigger"])
    # the subscription built here sets each of these (pubsub.tf) ...
    for field in ("dead_letter_policy.dead_letter_topic", "dead_letter_policy.max_delivery_attempts",
                  "retry_policy.minimum_backoff", "retry_policy.maximum_backoff",
                  "push_config.oidc_token.audience", "ack_deadline_seconds", "message_retention_duration"):
        assert field in subscription, field
    # ... the trigger has no argument for any of them (google 6.50.0)
    for word in ("dead_letter", "retry", "audience", "ack_deadline", "retention"):
        assert not [f for f in trigger if word in f], (word, sorted(trigger))
    assert {"service_account", "destination.cloud_run_service.path", "transport.pubsub.topic"} <= trigger
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text()
    section = deploy[deploy.index("## Pub/Sub or Eventarc"):]
    section = section[:section.index("\n## ", 4)]
    for field in ("dead_letter_policy", "retry_policy", "oidc_token.audience", "ack_deadline_seconds",
                  "service_account", "cloud_run_service.path"):
        assert field in section, field


# --- the scripts with trigger = "eventarc" ---------------------------------------------------------


def eventarc_env(tmp_path: Path, mirror_template: Path | None, faults: set[str] | None = None) -> Env:
    """A project where nothing exists yet, with trigger = "eventarc" in terraform.tfvars."""
    env = Env(tmp_path, mirror_template, faults=faults)
    (env.tf / "terraform.tfvars").write_text('trigger = "eventarc"\n')
    return env


def test_setup_gives_the_push_service_its_own_url_as_audience(tmp_path, mirror_template):
    env = eventarc_env(tmp_path, mirror_template)
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    applies = [c for c in env.changing() if c.startswith("terraform apply")]
    full = [c for c in applies if "-target=" not in c]
    assert len(full) == 2 and full[0] == full[1], "the full apply, then once more with the service's URL"
    assert json.loads((env.tf / "eventarc.auto.tfvars.json").read_text()) == {"eventarc_push_audience": PUSH_URL}
    out = env.outputs()
    assert out["push_audience"] == out["push_service_url"] == PUSH_URL
    assert out["push_service_account"] == EVENTS_SA
    assert "Eventarc trigger" in r.stdout and "requires Eventarc's token audience" in r.stderr
    # a second run has nothing to fix
    env.clear()
    ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert len([c for c in env.changing() if c.startswith("terraform apply") and "-target=" not in c]) == 1


def test_the_targeted_apply_makes_the_trigger_account(tmp_path):
    """Like the services' accounts (test_scripts_terraform.py), the trigger's is
    minutes old when the full apply names it."""
    from test_scripts_terraform import setup_targets
    from tf_mirror import mirror_address

    tf = write_mirror(tmp_path / "tf")
    (tf / "terraform.tfvars").write_text('trigger = "eventarc"\n')
    terraform(tf, "apply", "-input=false", "-auto-approve", f"-var=project_id={PROJECT}",
              *[f"-target={mirror_address(t)}" for t in setup_targets()])
    made = terraform(tf, "state", "list").stdout.split()
    assert "terraform_data.google_service_account__events[0]" in made
    assert not [a for a in made if "eventarc_trigger" in a or "cloud_run_v2" in a], made


def test_setup_waits_for_eventarcs_service_agent(tmp_path):
    """A fresh project's Eventarc and Cloud Storage agents get their roles moments
    after the API is enabled; creating the trigger fails meanwhile."""
    address = "google_eventarc_trigger.input_finalized"
    env = eventarc_env(tmp_path, None, faults={address})
    env.fault(address, "create", 1, 'Error: Error creating Trigger: googleapi: Error 400: Invalid resource state '
                                    'for "": Permission denied while using the Eventarc Service Agent. If you '
                                    'recently started to use Eventarc, it may take a few minutes before all '
                                    'necessary permissions are propagated to the Service Agent.')
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert env.fired(address, "create") == 1 and env.sleeps() == [15]
    assert "Eventarc and Cloud Storage service agents" in r.stderr


def test_setup_with_pubsub_applies_once(tmp_path, mirror_template):
    env = Env(tmp_path, mirror_template)
    ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert len([c for c in env.changing() if c.startswith("terraform apply") and "-target=" not in c]) == 1
    assert not (env.tf / "eventarc.auto.tfvars.json").exists()


def test_destroy_stops_intake_by_deleting_the_trigger_first(tmp_path, mirror_template):
    env = eventarc_env(tmp_path, mirror_template)
    env.apply()
    (env.tf / "eventarc.auto.tfvars.json").write_text(json.dumps({"eventarc_push_audience": PUSH_URL}))
    r = ok(env.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    gone = [m.group(1) for m in re.finditer(r"^terraform_data\.(\w+)(?:\[[^\]]*\])?: Destruction complete", out, re.M)]
    assert gone[0] == "google_eventarc_trigger__input_finalized", gone[:3]
    assert env.state_list() == [] and not (env.tf / "eventarc.auto.tfvars.json").exists()
