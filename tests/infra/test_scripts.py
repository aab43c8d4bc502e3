"""setup.sh, deploy.sh and destroy.sh, run for real: against the real terraform
on a mirror of terraform/, with recording stand-ins for gcloud, docker and
sleep (script_harness.py; stubs/fake_cli.py says what they still assume)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, need_tool
from tf_mirror import real_address
from script_harness import (ACT_AS_NOT_YET, BUCKET_NOT_EMPTY, BUCKETS, BUILD_BUCKET, BUILD_FAILED, BUILD_ID,
                            BUILD_SA, BUILDER_NOT_YET, FETCH_SOURCE_FAILED, IMAGE_URI, METRIC_404, PREDICT, PROJECT,
                            PUSH, PUSH_NOT_AUTHORIZED, REGION, SCRIPTS, SERVICE_DISABLED, SHARD_JOB, STUBS,
                            TOKENS_NOT_YET, TOPIC_NOT_YET, TOPIC_NOT_YET_403, USER_BUILD_STEP, Env, PtyStdin, failed,
                            index, ok, terraform)

TARGETED = "terraform apply -input=false -auto-approve"


@pytest.fixture
def env(tmp_path, mirror_template) -> Env:
    """A project where nothing exists yet."""
    return Env(tmp_path, mirror_template)


@pytest.fixture
def deployed(tmp_path, deployed_template) -> Env:
    """A project where setup.sh has run (the real terraform's state of a full apply)."""
    return Env(tmp_path, deployed_template)


def applies(e: Env) -> list[str]:
    return [c for c in e.changing() if c.startswith("terraform apply")]


# --- every script ------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_strict_bash_and_executable(script):
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    # what the three share, from their own directory whatever the working one
    assert 'source "$ROOT/scripts/common.sh"' in text
    assert 'ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"' in text
    assert "read_outputs" in text and "output -json" in (ROOT / "scripts" / "common.sh").read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(env, script):
    for flag in ("--help", "-h"):
        r = ok(env.run(script, flag))
        assert r.stdout.startswith("Usage: ./" + script)
        assert "--dry-run" in r.stdout
    assert env.calls() == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_option_is_refused(env, script):
    r = env.run(script, "--frobnicate")
    assert r.returncode == 2 and f"{script}: unknown option: --frobnicate" in r.stderr
    assert env.calls() == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_run_from_any_directory(deployed, tmp_path, script):
    """They find scripts/common.sh (and terraform/) from their own path, and
    their errors carry their own name."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = ok(deployed.run(script, "--dry-run", cwd=elsewhere, env={"GOOGLE_CLOUD_PROJECT": PROJECT}))
    assert "dry run: nothing was" in r.stderr
    r = failed(deployed.run(script, "--dry-run", cwd=elsewhere, env={"SCORER_TF_DIR": str(elsewhere / "none")}))
    assert f"{script}: error: no Terraform configuration at {elsewhere / 'none'}" in r.stderr


def restricted_path(tmp_path: Path, without: str) -> str:
    """A PATH with the stand-ins and the system tools the scripts use, minus one tool."""
    stubs = tmp_path / "stubs-bin"
    stubs.mkdir()
    for tool in ("terraform", "gcloud", "docker", "sleep"):
        if tool != without:
            (stubs / tool).symlink_to(STUBS / tool)
    system = tmp_path / "system-bin"
    system.mkdir()
    # the stand-ins run on this interpreter (a pyenv shim would need pyenv on PATH)
    (system / "python3").symlink_to(os.path.realpath(sys.executable))
    for tool in ("bash", "env", "git", "jq", "dirname", "date", "cat", "rm", "grep", "sed", "mktemp", "mv"):
        if tool != without:
            (system / tool).symlink_to(need_tool(tool, f"install {tool}"))
    return f"{stubs}{os.pathsep}{system}"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("missing", ["terraform", "gcloud", "jq"])
def test_a_missing_tool_is_named(deployed, tmp_path, script, missing):
    r = failed(deployed.run(script, "--yes" if script != "deploy.sh" else "--dry-run",
                            path=restricted_path(tmp_path, missing), env={"GOOGLE_CLOUD_PROJECT": PROJECT}))
    assert f"missing tool(s): {missing}" in r.stderr
    assert deployed.calls() == []


def test_docker_is_needed_only_for_the_docker_builder(deployed, tmp_path):
    path = restricted_path(tmp_path, "docker")
    r = failed(deployed.run("deploy.sh", "--builder", "docker", path=path))
    assert "missing tool(s): docker" in r.stderr
    ok(deployed.run("deploy.sh", "--dry-run", path=path))


# --- setup.sh ------------------------------------------------------------------------------


def test_setup_names_an_unset_project(env):
    r = failed(env.run("setup.sh", "--yes"))
    assert "no Google Cloud project set" in r.stderr and "--project" in r.stderr
    assert env.changing() == []


def test_setup_takes_the_project_from_gcloud_config(env):
    env.write("gcloud_project", PROJECT)
    ok(env.run("setup.sh", "--yes"))
    assert all(f"-var project_id={PROJECT}" in c for c in applies(env))
    assert env.outputs()["project_id"] == PROJECT


def test_setup_on_a_fresh_project(env):
    """Issue 18, defect 1: with outputs.tf's `region = var.region`, the real terraform
    writes no `region` after the targeted apply and setup.sh died there, every run."""
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    cmds = env.changing()
    image = f"{IMAGE_URI}:{env.sha}"

    enable = index(cmds, "gcloud services enable")
    targeted = index(cmds, "terraform apply")
    build = index(cmds, "gcloud builds submit")
    full = max(i for i, c in enumerate(cmds) if c.startswith("terraform apply"))
    assert enable < index(env.commands(), "terraform init") and enable < targeted < build < full

    assert "serviceusage.googleapis.com" in cmds[enable] and "cloudresourcemanager.googleapis.com" in cmds[enable]
    assert "-target=google_artifact_registry_repository.images" in cmds[targeted]
    assert "-target=google_project_service.apis" in cmds[targeted]
    assert f"-var project_id={PROJECT}" in cmds[targeted] and "-auto-approve" in cmds[targeted]
    # the Pub/Sub service agent is Terraform's business now (google_project_service_identity)
    assert not any("gcloud beta" in c for c in cmds)

    b = cmds[build]
    assert f"--substitutions _IMAGE={image},_GIT_COMMIT={env.sha}" in b
    assert f"--config {env.repo}/cloudbuild.yaml" in b and f"gcloud builds submit {env.repo} " in b
    assert f"--region {REGION}" in b
    assert f"--service-account projects/{PROJECT}/serviceAccounts/{BUILD_SA}" in b
    assert f"--gcs-source-staging-dir gs://{BUILD_BUCKET}/source" in b

    assert "-target" not in cmds[full] and f"-var image_tag={env.sha}" in cmds[full]
    assert len(applies(env)) == 2
    tfvars = json.loads((env.tf / "image.auto.tfvars.json").read_text())
    assert tfvars == {"image_tag": env.sha}
    out = env.outputs()
    assert out["push_service_name"] == PUSH and out["predict_service_name"] == PREDICT
    assert f"gsutil cp data/scl_flights_2017.csv gs://{BUCKETS[0]}/" in r.stdout
    assert out["predict_service_url"] + "/predict" in r.stdout
    assert not any(c.startswith(("docker", "gcloud run")) for c in cmds)
    assert env.sleeps() == [], "nothing lagged: nothing waited"


def test_setup_twice_is_harmless(env):
    ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    first, state = env.changing(), env.state_list()
    env.clear()
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    second = env.changing()
    assert [c for c in first if not c.startswith("gcloud builds submit")] == second, \
        "the second run repeats the idempotent steps and builds nothing"
    assert "the services exist: not building" in r.stderr
    assert (env.state / "images").read_text().split() == [f"{IMAGE_URI}:{env.sha}"]
    assert env.state_list() == state


def test_setup_after_the_services_exist_builds_nothing(deployed):
    """New code is deploy.sh's business: a later setup (new commit) only applies."""
    (deployed.tf / "image.auto.tfvars.json").write_text('{"image_tag": "0ld"}')
    deployed.git("commit", "-q", "--allow-empty", "-m", "next")
    r = ok(deployed.run("setup.sh", "--project", PROJECT, "--yes"))
    cmds = deployed.changing()
    assert not any(c.startswith(("gcloud builds", "docker")) for c in cmds)
    assert cmds[-1].startswith("terraform apply") and cmds[-1].endswith("-var image_tag=0ld")
    assert "./deploy.sh" in r.stderr
    assert json.loads((deployed.tf / "image.auto.tfvars.json").read_text()) == {"image_tag": "0ld"}


REVISION_NOT_READY = (
    "Error: Error waiting to create Service: resource is in failed state \"Ready:False\", message: Revision "
    "'scorer-00001-abc' is not ready and cannot serve traffic. The user-provided container failed to start and "
    "listen on the port defined provided by the PORT=8080 environment variable."
)
SERVICES = "google_cloud_run_v2_service.services"


def tainted(e: Env) -> list[str]:
    shown = json.loads(terraform(e.tf, "show", "-json").stdout)
    return [real_address(r["address"]) for r in shown.get("values", {}).get("root_module", {}).get("resources", [])
            if r.get("tainted")]


@pytest.mark.parametrize("service", ["push", "predict"])
def test_setup_after_a_service_failed_halfway_builds_the_new_commit(tmp_path, service):
    """A first full apply in which one service's create fails (its revision never
    got ready: the code's fault) leaves that service tainted, and without
    outputs. Once the code is fixed, setup.sh builds the new commit and the
    apply replaces the service with it; "the services exist" is said only when
    both are there and whole."""
    env = Env(tmp_path, faults={SERVICES})
    env.fault(f"{SERVICES}[{service}]", "create", 1, REVISION_NOT_READY)
    r = failed(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "the apply failed" in r.stderr and env.sleeps() == [], "the code's fault: not retried"
    assert env.fired(f"{SERVICES}[{service}]", "create") == 1
    assert tainted(env) == [f'{SERVICES}["{service}"]'], "the real terraform taints the service whose create failed"
    other = {"push": "predict", "predict": "push"}[service]
    assert f"{other}_service_url" in env.outputs() and f"{service}_service_url" not in env.outputs()
    first = env.sha
    r = failed(env.run("deploy.sh"))
    assert "./setup.sh" in r.stderr and not any(c.startswith("gcloud run") for c in env.changing())

    env.git("commit", "-q", "--allow-empty", "-m", "the fix")
    fixed = env.git("rev-parse", "HEAD").strip()
    env.clear()
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "the services exist" not in r.stderr
    builds = [c for c in env.changing() if "builds submit" in c]
    assert len(builds) == 1 and f"_IMAGE={IMAGE_URI}:{fixed}," in builds[0] and first != fixed
    assert applies(env)[-1].endswith(f"-var image_tag={fixed}")
    assert json.loads((env.tf / "image.auto.tfvars.json").read_text()) == {"image_tag": fixed}
    assert tainted(env) == [] and env.outputs()["push_service_name"] == PUSH
    assert env.outputs()["predict_service_name"] == PREDICT
    env.clear()
    ok(env.run("deploy.sh"))


@pytest.mark.parametrize("service", ["push", "predict"])
def test_setup_builds_for_a_tainted_service_even_with_both_outputs(deployed, service):
    """Both services in the outputs, one of them tainted: not "the services exist"."""
    (deployed.tf / "image.auto.tfvars.json").write_text('{"image_tag": "0ld"}')
    terraform(deployed.tf, "taint", f'terraform_data.google_cloud_run_v2_service__services["{service}"]')
    assert {"push_service_url", "predict_service_url"} <= set(deployed.outputs())
    r = failed(deployed.run("deploy.sh"))
    assert f'google_cloud_run_v2_service.services["{service}"] is tainted' in r.stderr and "./setup.sh" in r.stderr
    assert deployed.changing() == []

    deployed.git("commit", "-q", "--allow-empty", "-m", "the fix")
    fixed = deployed.git("rev-parse", "HEAD").strip()
    r = ok(deployed.run("setup.sh", "--project", PROJECT, "--yes"))
    assert f'google_cloud_run_v2_service.services["{service}"] is tainted' in r.stderr
    assert "the services exist" not in r.stderr
    assert any(f"_IMAGE={IMAGE_URI}:{fixed}," in c for c in deployed.changing() if "builds submit" in c)
    assert deployed.changing()[-1].endswith(f"-var image_tag={fixed}") and tainted(deployed) == []


def test_setup_reuses_an_image_built_by_an_interrupted_run(env):
    env.write("build_fails", json.dumps({"times": 1, "message": BUILD_FAILED}))
    failed(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert len(applies(env)) == 1, "stopped after the targeted apply"
    env.clear()
    env.write("images", f"{IMAGE_URI}:{env.sha}\n")  # built meanwhile (by hand, or CI)
    ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert not any("builds submit" in c for c in env.changing())
    assert env.changing()[-1].endswith(f"-var image_tag={env.sha}")


def test_setup_refuses_a_state_of_another_project(deployed):
    deployed.apply("someone-elses")
    r = failed(deployed.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "belongs to project 'someone-elses'" in r.stderr
    assert applies(deployed) == []


def test_setup_without_a_terminal_needs_yes(env):
    r = failed(env.run("setup.sh", "--project", PROJECT))
    assert "--yes" in r.stderr
    assert env.changing() == []


def test_setup_interactive_apply_asks_terraform_for_approval(env):
    """Without --yes terraform itself asks; an answer other than "yes" cancels (the real terraform)."""
    with PtyStdin("no\n") as tty:
        r = failed(env.run("setup.sh", "--project", PROJECT, stdin=tty.slave))
    assert len(applies(env)) == 1 and "-auto-approve" not in applies(env)[0]
    assert "Apply cancelled" in r.stdout + r.stderr
    assert env.state_list() == [], "nothing was applied"


def test_setup_region_is_passed_to_terraform(env):
    ok(env.run("setup.sh", "--project", PROJECT, "--region", "us-central1", "--yes"))
    assert all("-var region=us-central1" in c for c in applies(env))
    assert "--region us-central1" in next(c for c in env.changing() if "builds submit" in c)
    out = env.outputs()
    assert out["region"] == "us-central1" and out["image_uri"].startswith("us-central1-docker.pkg.dev/")


def test_setup_build_failure_stops_before_the_services(env):
    """A build that ran and failed is the code's fault: no retry, no service;
    what Cloud Build says and where the build's log is are printed."""
    env.write("build_fails", json.dumps({"times": 5, "message": BUILD_FAILED}))
    env.write("build_info", USER_BUILD_STEP)
    r = failed(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "the build failed" in r.stderr and "./setup.sh again" in r.stderr
    assert f"build {BUILD_ID} failed with USER_BUILD_STEP: Build step failure" in r.stderr
    assert f'resource.labels.build_id="{BUILD_ID}"' in r.stderr
    assert len(applies(env)) == 1
    assert len([c for c in env.changing() if "builds submit" in c]) == 1 and env.sleeps() == []
    assert not any(a.startswith("terraform_data.google_cloud_run_v2_service") for a in env.state_list())


def test_setup_dry_run_runs_nothing(env):
    r = ok(env.run("setup.sh", "--project", PROJECT, "--dry-run"))
    assert env.changing() == []
    printed = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert printed[0].startswith("+ gcloud services enable")
    assert any(p.startswith("+ terraform -chdir=") and " apply " in p and "-target=" in p for p in printed)
    assert any(p.startswith("+ gcloud builds submit") and "_IMAGE=\\<image_uri\\>:" in p for p in printed)
    assert any(p.startswith("+ write ") and "image.auto.tfvars.json" in p for p in printed)
    assert not (env.tf / "image.auto.tfvars.json").exists()
    assert env.state_list() == []


def test_setup_dry_run_after_an_interrupted_run_prints_real_names(env):
    env.write("build_fails", json.dumps({"times": 1, "message": BUILD_FAILED}))
    failed(env.run("setup.sh", "--project", PROJECT, "--yes"))  # the targeted apply only
    env.clear()
    r = ok(env.run("setup.sh", "--project", PROJECT, "--dry-run"))
    assert env.changing() == []
    assert f"_IMAGE={IMAGE_URI}:{env.sha}" in r.stdout
    assert f"gs://{BUILD_BUCKET}/source" in r.stdout


def test_setup_with_the_docker_builder(env):
    ok(env.run("setup.sh", "--project", PROJECT, "--yes", "--builder", "docker"))
    cmds = env.changing()
    image = f"{IMAGE_URI}:{env.sha}"
    assert f"docker build --file {env.repo}/app/Dockerfile --tag {image}" in cmds[index(cmds, "docker build")]
    assert cmds[index(cmds, "docker push")] == f"docker push {image}"
    assert "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet" in cmds
    assert not any("builds submit" in c for c in cmds)


# --- setup.sh on a fresh project: what lags is waited for (issue 18, defects 2 and 3) -------


def test_setup_waits_for_the_builder_account_to_propagate(env):
    """The builder account and its grants, created by the targeted apply moments
    before, are refused by Cloud Build for a minute or three on a new project."""
    env.write("build_fails", json.dumps({"times": 2, "message": BUILDER_NOT_YET}))
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert len([c for c in env.changing() if "builds submit" in c]) == 3
    assert env.sleeps() == [15, 30]
    assert r.stderr.count("waiting for the builder account's new grants to reach Cloud Build") == 2
    assert "retry 1 of 5 in 15s" in r.stderr and "retry 2 of 5 in 30s" in r.stderr
    assert env.outputs()["push_service_name"] == PUSH


def test_setup_waits_a_bounded_time(env):
    env.write("build_fails", json.dumps({"times": 100, "message": BUILDER_NOT_YET}))
    r = failed(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert env.sleeps() == [15, 30, 60, 60, 60], "about 4 minutes, then it gives up"
    assert len([c for c in env.changing() if "builds submit" in c]) == 6
    assert "gave up waiting for the builder account's new grants" in r.stderr
    assert len(applies(env)) == 1


def test_setup_waits_for_apis_enabled_moments_before(tmp_path):
    """The real terraform fails the repository twice, the way the google provider
    reports an API enabled seconds ago; setup.sh waits and applies again."""
    env = Env(tmp_path, faults={"google_artifact_registry_repository.images"})
    env.fault("google_artifact_registry_repository.images", "create", 2, SERVICE_DISABLED)
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert env.fired("google_artifact_registry_repository.images", "create") == 2
    assert len([c for c in applies(env) if "-target=" in c]) == 3
    assert env.sleeps() == [15, 30]
    assert "waiting for the APIs enabled moments ago to become usable" in r.stderr
    assert env.outputs()["region"] == REGION


def test_setup_waits_for_new_log_metrics_to_reach_cloud_monitoring(tmp_path):
    """Issue 18, defect 2: the first full apply creates the log-based metrics and
    the alert that reads them; Cloud Monitoring answers 404 for minutes. Besides
    the time_sleep between them (test_scripts_terraform.py), setup.sh retries that
    404 with a bounded backoff."""
    address = "google_monitoring_alert_policy.failed_files"
    env = Env(tmp_path, faults={address})
    env.fault(address, "create", 2, METRIC_404)
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert env.fired(address, "create") == 2
    full = [c for c in applies(env) if "-target=" not in c]
    assert len(full) == 3 and len(set(full)) == 1, "the same full apply, three times"
    assert env.sleeps() == [60, 120]
    assert "waiting for the new log-based metrics to reach Cloud Monitoring" in r.stderr
    assert "terraform_data.google_monitoring_alert_policy__failed_files" in env.state_list()


# lag_reason (scripts/common.sh) on the errors Google gives, word for word: what
# a fresh project is slow to see is waited for, anything else is not.
APIS = "the APIs enabled moments ago"
METRICS = "the new log-based metrics"
ACCOUNTS = "the service accounts created moments ago"
TOPIC_GRANT = "the Cloud Storage service agent's new grant on the topic"
RUN_AGENT = "the Cloud Run service agent's access to the new service accounts"
BUILDER = "the builder account's new grants to reach Cloud Build"
LAG_TABLE = [
    ("apply", SERVICE_DISABLED, None, APIS),
    ("apply", METRIC_404, None, METRICS),
    ("apply", ACT_AS_NOT_YET, None, ACCOUNTS),
    ("apply", ACT_AS_NOT_YET.replace("serviceaccounts", "serviceAccounts"), None, ACCOUNTS),
    ("apply", "Error: Error creating Service: googleapi: Error 403: Permission 'iam.serviceAccounts.actAs' denied on "
              f"service account scorer-predict@{PROJECT}.iam.gserviceaccount.com (or it may not exist).", None,
     ACCOUNTS),
    ("apply", f"Error: Request `Create IAM Members roles/storage.objectViewer serviceAccount:scorer-run@{PROJECT}."
              "iam.gserviceaccount.com for project \"acme-scoring\"` returned error: Batch request and retried "
              "single request failed. googleapi: Error 400: Service account "
              f"scorer-run@{PROJECT}.iam.gserviceaccount.com does not exist., badRequest", None, ACCOUNTS),
    ("apply", "Error: Error applying IAM policy for storage bucket: googleapi: Error 400: Invalid argument: "
              f"Gaia id not found for email scorer-run@{PROJECT}.iam.gserviceaccount.com", None, ACCOUNTS),
    ("apply", TOPIC_NOT_YET, None, TOPIC_GRANT),
    ("apply", TOPIC_NOT_YET_403, None, TOPIC_GRANT),
    ("apply", TOKENS_NOT_YET, None, RUN_AGENT),
    ("build", BUILDER_NOT_YET, None, BUILDER),
    ("build", "ERROR: (gcloud.builds.submit) PERMISSION_DENIED: The caller does not have permission", None, BUILDER),
    ("build", BUILD_FAILED, PUSH_NOT_AUTHORIZED, BUILDER),
    ("build", BUILD_FAILED, FETCH_SOURCE_FAILED, BUILDER),
    # real errors: the code, a typo, the operator's own missing role
    ("build", BUILD_FAILED, USER_BUILD_STEP, None),
    ("build", BUILD_FAILED, "", None),
    ("apply", "Error: Error creating Subscription: googleapi: Error 400: Invalid push_config: the push endpoint is "
              "not valid.", None, None),
    ("apply", "Error: Error creating Topic: googleapi: Error 409: Resource already exists in the project "
              "(resource=scorer-input-events).", None, None),
    ("apply", "Error: Error creating Service: googleapi: Error 403: Permission 'run.services.create' denied on "
              f"resource 'projects/{PROJECT}/locations/{REGION}/services/scorer' (or it may not exist).", None, None),
    ("apply", BUILDER_NOT_YET, None, None),
    ("apply", BUILD_FAILED, PUSH_NOT_AUTHORIZED, None),
]


def lag_reason(tmp_path: Path, kind: str, error: str, build_info: str | None) -> subprocess.CompletedProcess:
    """scripts/common.sh's lag_reason itself, in bash, with the gcloud stand-in on PATH."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "build_info").unlink(missing_ok=True)
    if build_info is not None:
        (state / "build_info").write_text(build_info)
    err = tmp_path / "error.txt"
    err.write_text(error + "\n")
    script = ('ROOT="$1"; source "$ROOT/scripts/common.sh"; PROJECT=acme-scoring; BUILD_REGION=europe-west1; '
              'lag_reason "$2" "$3"')
    return subprocess.run(["bash", "-c", script, "lag_reason", str(ROOT), kind, str(err)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": f"{STUBS}{os.pathsep}{os.environ['PATH']}",
                                                       "STUB_STATE": str(state)})


@pytest.mark.parametrize("kind,error,build_info,expected", LAG_TABLE,
                         ids=[f"{k}-{i}" for i, (k, *_rest) in enumerate(LAG_TABLE)])
def test_lag_reason(tmp_path, kind, error, build_info, expected):
    r = lag_reason(tmp_path, kind, error, build_info)
    assert r.returncode == 0, r.stderr
    if expected is None:
        assert r.stdout == "", f"a real error taken for lag: {r.stdout!r}"
    else:
        assert r.stdout.startswith(expected), f"{r.stdout!r} (expected {expected!r})"


def test_a_failed_build_says_why_and_where_its_log_is(tmp_path):
    r = lag_reason(tmp_path, "build", BUILD_FAILED, USER_BUILD_STEP)
    assert r.stdout == ""
    assert f"build {BUILD_ID} failed with USER_BUILD_STEP: Build step failure: build step 0" in r.stderr
    assert (f"gcloud logging read 'resource.type=\"build\" AND resource.labels.build_id=\"{BUILD_ID}\"' "
            f"--project {PROJECT}") in r.stderr
    calls = [json.loads(line) for line in (tmp_path / "state" / "calls.jsonl").read_text().splitlines()]
    assert [c["argv"] for c in calls] == [["builds", "describe", BUILD_ID, "--project", PROJECT, "--region", REGION,
                                           "--format=value(failureInfo.type,failureInfo.detail)"]]


@pytest.mark.parametrize("address,message,reason,times", [
    # (the services are two instances, created at once: one fault, one of them fails)
    ("google_cloud_run_v2_service.services", ACT_AS_NOT_YET, ACCOUNTS, 1),
    ("google_cloud_run_v2_service.services", TOKENS_NOT_YET, RUN_AGENT, 1),
    ("google_storage_notification.input_finalize", TOPIC_NOT_YET, TOPIC_GRANT, 2),
])
def test_setup_waits_for_grants_of_the_full_apply(tmp_path, address, message, reason, times):
    """The real terraform fails a resource of the full apply the way the google
    provider reports what a fresh project has not propagated yet; setup.sh
    waits and applies again (a service whose create failed is tainted, and the
    real terraform replaces it)."""
    env = Env(tmp_path, faults={address})
    env.fault(address, "create", times, message)
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert env.fired(address, "create") >= 1
    full = [c for c in applies(env) if "-target=" not in c]
    assert len(full) == times + 1 and env.sleeps() == [15, 30][:times]
    assert r.stderr.count(f"waiting for {reason}") == times
    assert env.outputs()["push_service_name"] == PUSH and env.outputs()["predict_service_name"] == PREDICT
    assert not [a for a in env.state_list() if "google_cloud_run_v2_service" in a and "tainted" in a]


def test_setup_retries_a_build_cloud_build_could_not_push(env):
    """The build ran, but Cloud Build could not push (or fetch the source) as the
    builder account yet: described, and retried on the lag schedule."""
    env.write("build_fails", json.dumps({"times": 2, "message": BUILD_FAILED}))
    env.write("build_info", PUSH_NOT_AUTHORIZED)
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert len([c for c in env.changing() if "builds submit" in c]) == 3 and env.sleeps() == [15, 30]
    assert r.stderr.count(f"build {BUILD_ID} failed with PUSH_NOT_AUTHORIZED") == 2
    assert "Cloud Build said PUSH_NOT_AUTHORIZED" in r.stderr and "gcloud logging read" in r.stderr
    assert [c for c in env.commands() if c.startswith("gcloud builds describe")] == [
        f"gcloud builds describe {BUILD_ID} --project {PROJECT} --region {REGION} "
        "--format=value(failureInfo.type,failureInfo.detail)"] * 2
    assert env.outputs()["push_service_name"] == PUSH


def test_setup_does_not_retry_a_real_error(tmp_path):
    address = "google_pubsub_subscription.push"
    env = Env(tmp_path, faults={address})
    env.fault(address, "create", 5, "Error: Error creating Subscription: googleapi: Error 400: Invalid "
                                    "push_config: the push endpoint is not valid.")
    r = failed(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert env.fired(address, "create") == 1 and env.sleeps() == []
    assert "the apply failed" in r.stderr and "Invalid push_config" in r.stderr


def test_setup_warns_without_an_alert_channel(env):
    """Issue 18, defect 8: alerts that reach nobody are pointed out."""
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "no alert channel is configured" in r.stderr and "alert_email" in r.stderr
    assert env.outputs()["alert_notification_channels"] == []

    (env.tf / "terraform.tfvars").write_text('alert_email = "oncall@example.com"\n')
    env.clear()
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "no alert channel" not in r.stderr
    assert len(env.outputs()["alert_notification_channels"]) == 1


# --- deploy.sh (issue 18, defect 4: both services, one image; and the shard job) --------------


def test_deploy_pushes_the_commit_tagged_image_and_rolls_both_services(deployed):
    deployed.write(f"latest_revision.{PUSH}", "scorer-00007-xyz")
    deployed.write(f"latest_revision.{PREDICT}", "scorer-predict-00003-abc")
    r = ok(deployed.run("deploy.sh"))
    cmds = deployed.changing()
    image = f"{IMAGE_URI}:{deployed.sha}"
    gc = f"--project {PROJECT} --region {REGION}"
    assert cmds == [
        f"gcloud builds submit {deployed.repo} --project {PROJECT} --region {REGION} "
        f"--config {deployed.repo}/cloudbuild.yaml "
        f"--substitutions _IMAGE={image},_GIT_COMMIT={deployed.sha} "
        f"--service-account projects/{PROJECT}/serviceAccounts/{BUILD_SA} "
        f"--gcs-source-staging-dir gs://{BUILD_BUCKET}/source",
        # the job first: from the moment the push service's new revision
        # dispatches, its tasks run the same image (and model)
        f"gcloud run jobs update {SHARD_JOB} {gc} --image {image} --quiet",
        f"gcloud run services update {PUSH} {gc} --image {image} --quiet",
        f"gcloud run services update-traffic {PUSH} {gc} --to-latest --quiet",
        f"gcloud run services update {PREDICT} {gc} --image {image} --quiet",
        f"gcloud run services update-traffic {PREDICT} {gc} --to-latest --quiet",
    ]
    assert r.stdout.strip().splitlines()[-2:] == [f"{PUSH} scorer-00007-xyz",
                                                  f"{PREDICT} scorer-predict-00003-abc"], "prints the new revisions"
    assert image in (deployed.state / "images").read_text()


def test_deploy_says_why_a_build_failed_and_changes_nothing(deployed):
    deployed.write("build_fails", json.dumps({"times": 5, "message": BUILD_FAILED}))
    deployed.write("build_info", USER_BUILD_STEP)
    r = failed(deployed.run("deploy.sh"))
    assert "the build failed" in r.stderr and "nothing was deployed" in r.stderr
    assert f"build {BUILD_ID} failed with USER_BUILD_STEP" in r.stderr and "gcloud logging read" in r.stderr
    assert not any(c.startswith("gcloud run") for c in deployed.changing()) and deployed.sleeps() == []


def test_deploy_retries_a_build_cloud_build_could_not_fetch(deployed):
    deployed.write("build_fails", json.dumps({"times": 1, "message": BUILD_FAILED}))
    deployed.write("build_info", FETCH_SOURCE_FAILED)
    r = ok(deployed.run("deploy.sh"))
    assert deployed.sleeps() == [15] and "Cloud Build said FETCH_SOURCE_FAILED" in r.stderr
    assert len([c for c in deployed.changing() if "builds submit" in c]) == 2
    assert f"{IMAGE_URI}:{deployed.sha}" in (deployed.state / "images").read_text()


def test_deploy_reuses_an_image_that_exists(deployed):
    deployed.write("images", f"{IMAGE_URI}:{deployed.sha}\n")
    ok(deployed.run("deploy.sh"))
    cmds = deployed.changing()
    assert not any("builds submit" in c for c in cmds)
    assert [c.split()[:5] for c in cmds] == [
        ["gcloud", "run", "jobs", "update", SHARD_JOB],
        ["gcloud", "run", "services", "update", PUSH], ["gcloud", "run", "services", "update-traffic", PUSH],
        ["gcloud", "run", "services", "update", PREDICT], ["gcloud", "run", "services", "update-traffic", PREDICT]]
    assert all(f"--image {IMAGE_URI}:{deployed.sha}" in c for c in cmds if " update " in c)


def test_deploy_with_the_docker_builder(deployed):
    ok(deployed.run("deploy.sh", "--builder", "docker"))
    cmds = deployed.changing()
    image = f"{IMAGE_URI}:{deployed.sha}"
    assert cmds[:3] == [
        "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet",
        f"docker build --file {deployed.repo}/app/Dockerfile --tag {image} "
        f"--label org.opencontainers.image.revision={deployed.sha} {deployed.repo}",
        f"docker push {image}",
    ]
    assert cmds[3].startswith(f"gcloud run jobs update {SHARD_JOB}")
    assert cmds[4].startswith(f"gcloud run services update {PUSH}")


def test_deploy_stops_when_the_push_service_refuses_the_image(deployed):
    deployed.write(f"update_fails.{PUSH}", "")
    deployed.write(f"job_image.{SHARD_JOB}", f"{IMAGE_URI}:before\n")
    r = failed(deployed.run("deploy.sh"))
    assert "nothing was changed" in r.stderr
    cmds = deployed.changing()
    assert not any(PREDICT in c or "update-traffic" in c for c in cmds)
    # the job had taken the new image: it is put back to the one it had
    jobs = [c for c in cmds if c.startswith(f"gcloud run jobs update {SHARD_JOB}")]
    assert [j.split("--image ")[1].split()[0] for j in jobs] == [f"{IMAGE_URI}:{deployed.sha}", f"{IMAGE_URI}:before"]
    assert (deployed.state / f"job_image.{SHARD_JOB}").read_text().strip() == f"{IMAGE_URI}:before"


def test_deploy_stops_when_the_job_refuses_the_image(deployed):
    deployed.write(f"update_fails.{SHARD_JOB}", "")
    r = failed(deployed.run("deploy.sh"))
    assert f"job {SHARD_JOB} did not take" in r.stderr and "nothing was changed" in r.stderr
    assert not any(c.startswith("gcloud run services") for c in deployed.changing())


def test_deploy_without_a_shard_job_rolls_the_services_only(deployed):
    """shard_job_enabled = false: no job in the state, none in the deploy."""
    deployed.apply(PROJECT, "0ld", "-var=shard_job_enabled=false")
    assert "shard_job_name" not in deployed.outputs() or not deployed.outputs()["shard_job_name"]
    ok(deployed.run("deploy.sh"))
    assert not any(" jobs " in c for c in deployed.commands())
    assert [c.split()[3] for c in deployed.changing() if c.startswith("gcloud run")] == [
        "update", "update-traffic", "update", "update-traffic"]


def test_deploy_says_how_to_undo_when_predict_refuses_the_image(deployed):
    deployed.write(f"update_fails.{PREDICT}", "")
    r = failed(deployed.run("deploy.sh"))
    assert "./deploy.sh --rollback --service push" in r.stderr
    assert not any(c.startswith(f"gcloud run services update-traffic {PREDICT}") for c in deployed.changing())


def test_deploy_refuses_uncommitted_changes_unless_allowed(deployed):
    (deployed.repo / "setup.sh").write_text((deployed.repo / "setup.sh").read_text() + "\n# local edit\n")
    r = failed(deployed.run("deploy.sh"))
    assert "uncommitted changes" in r.stderr and deployed.changing() == []
    ok(deployed.run("deploy.sh", "--allow-dirty"))
    update = next(c for c in deployed.changing() if c.startswith(f"gcloud run services update {PUSH}"))
    assert f"--image {IMAGE_URI}:{deployed.sha}-dirty-" in update


def test_deploy_without_state_names_the_missing_project(env):
    r = failed(env.run("deploy.sh"))
    assert "no Google Cloud project" in r.stderr and "setup.sh" in r.stderr
    assert env.changing() == []


def test_deploy_when_terraform_output_fails(env):
    """A remote backend that was never initialised: the real terraform refuses `output`."""
    (env.tf / "backend.tf").write_text('terraform {\n  backend "gcs" {\n    bucket = "acme-tfstate"\n  }\n}\n')
    r = failed(env.run("deploy.sh"))
    assert "'terraform output' failed" in r.stderr and "init" in r.stderr
    assert env.changing() == []


def test_deploy_dry_run_runs_nothing(deployed):
    r = ok(deployed.run("deploy.sh", "--dry-run"))
    assert deployed.changing() == []
    printed = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert [p.split()[1:6] for p in printed] == [
        ["gcloud", "builds", "submit", str(deployed.repo), "--project"],
        ["gcloud", "run", "jobs", "update", SHARD_JOB],
        ["gcloud", "run", "services", "update", PUSH], ["gcloud", "run", "services", "update-traffic", PUSH],
        ["gcloud", "run", "services", "update", PREDICT], ["gcloud", "run", "services", "update-traffic", PREDICT]]
    assert f"--image {IMAGE_URI}:{deployed.sha}" in printed[1] and f"--image {IMAGE_URI}:{deployed.sha}" in printed[2]
    assert "--to-latest" in printed[3]


# --- deploy.sh --rollback ----------------------------------------------------------------------


def revision(name: str, created: str, ready: bool = True, image: str | None = None) -> dict:
    r = {"metadata": {"name": name, "creationTimestamp": created},
         "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if image:  # the v1 Revision's spec, as `gcloud run revisions list --format=json` gives it
        r["spec"] = {"containers": [{"image": image}]}
    return r


def revisions(service: str, images: bool = False) -> list[dict]:
    def image(tag: str) -> str | None:
        return f"{IMAGE_URI}:{tag}" if images else None

    return [
        revision(f"{service}-00004-ddd", "2025-01-04T10:00:00.000000Z", image=image("ddd")),
        revision(f"{service}-00003-ccc", "2025-01-03T10:00:00.000000Z", ready=False, image=image("ccc")),
        revision(f"{service}-00002-bbb", "2025-01-02T10:00:00.000000Z", image=image("bbb")),
        revision(f"{service}-00001-aaa", "2025-01-01T10:00:00.000000Z", image=image("aaa")),
    ]


def serving(env: Env, service: str, rev: str, latest: bool = True, images: bool = False) -> None:
    env.write(f"revisions.{service}.json", json.dumps(revisions(service, images)))
    env.write(f"service.{service}.json", json.dumps({"status": {
        "latestReadyRevisionName": f"{service}-00004-ddd",
        "traffic": [{"revisionName": f"{service}-{rev}", "percent": 100, "latestRevision": latest}],
    }}))


def update_traffic(service: str, target: str) -> str:
    return (f"gcloud run services update-traffic {service} --project {PROJECT} --region {REGION} "
            f"--to-revisions {target}=100")


def test_rollback_targets_the_previous_ready_revision_of_each_service(deployed):
    serving(deployed, PUSH, "00004-ddd")
    serving(deployed, PREDICT, "00004-ddd")
    r = ok(deployed.run("deploy.sh", "--rollback"))
    assert deployed.changing() == [update_traffic(PUSH, f"{PUSH}-00002-bbb"),
                                   update_traffic(PREDICT, f"{PREDICT}-00002-bbb")], \
        "skips the revision that never became ready"
    assert r.stdout.strip().splitlines() == [f"{PUSH} {PUSH}-00002-bbb", f"{PREDICT} {PREDICT}-00002-bbb"]


def test_rollback_takes_the_shard_job_to_the_push_services_image(deployed):
    """The tasks refuse inputs dispatched for another model: the job follows the
    image of the push service's revision that traffic goes back to."""
    serving(deployed, PUSH, "00004-ddd", images=True)
    serving(deployed, PREDICT, "00004-ddd", images=True)
    r = ok(deployed.run("deploy.sh", "--rollback"))
    assert deployed.changing() == [
        update_traffic(PUSH, f"{PUSH}-00002-bbb"), update_traffic(PREDICT, f"{PREDICT}-00002-bbb"),
        f"gcloud run jobs update {SHARD_JOB} --project {PROJECT} --region {REGION} --image {IMAGE_URI}:bbb --quiet"]
    assert r.stdout.strip().splitlines() == [f"{PUSH} {PUSH}-00002-bbb", f"{PREDICT} {PREDICT}-00002-bbb"]
    # a rollback of the predict service alone leaves the job alone
    deployed.clear()
    ok(deployed.run("deploy.sh", "--rollback", "--service", "predict"))
    assert deployed.changing() == [update_traffic(PREDICT, f"{PREDICT}-00002-bbb")]
    # and --to a push revision takes the job to that revision's image
    deployed.clear()
    ok(deployed.run("deploy.sh", "--rollback", "--to", f"{PUSH}-00001-aaa"))
    assert deployed.changing()[-1].endswith(f"--image {IMAGE_URI}:aaa --quiet")


def test_rollback_warns_when_the_push_revisions_image_is_unknown(deployed):
    serving(deployed, PUSH, "00004-ddd")
    serving(deployed, PREDICT, "00004-ddd")
    r = ok(deployed.run("deploy.sh", "--rollback", "--service", "push"))
    assert f"job {SHARD_JOB} keeps its image" in r.stderr
    assert deployed.changing() == [update_traffic(PUSH, f"{PUSH}-00002-bbb")]


def test_rollback_twice_goes_one_further_back(deployed):
    serving(deployed, PUSH, "00002-bbb", latest=False)
    serving(deployed, PREDICT, "00002-bbb", latest=False)
    ok(deployed.run("deploy.sh", "--rollback"))
    assert deployed.changing() == [update_traffic(PUSH, f"{PUSH}-00001-aaa"),
                                   update_traffic(PREDICT, f"{PREDICT}-00001-aaa")]


def test_rollback_moves_nothing_unless_every_service_can_go_back(deployed):
    serving(deployed, PUSH, "00004-ddd")
    serving(deployed, PREDICT, "00001-aaa", latest=False)
    r = failed(deployed.run("deploy.sh", "--rollback"))
    assert f"no ready revision of {PREDICT}" in r.stderr and "nothing to roll back to" in r.stderr
    assert deployed.changing() == []


def test_rollback_of_one_service(deployed):
    serving(deployed, PUSH, "00004-ddd")
    serving(deployed, PREDICT, "00001-aaa", latest=False)
    r = ok(deployed.run("deploy.sh", "--rollback", "--service", "push"))
    assert deployed.changing() == [update_traffic(PUSH, f"{PUSH}-00002-bbb")]
    assert r.stdout.strip() == f"{PUSH} {PUSH}-00002-bbb"
    r = failed(deployed.run("deploy.sh", "--service", "push"))
    assert "--service only goes with --rollback" in r.stderr


def test_rollback_to_a_named_revision_moves_its_service_only(deployed):
    serving(deployed, PUSH, "00004-ddd")
    serving(deployed, PREDICT, "00004-ddd")
    ok(deployed.run("deploy.sh", "--rollback", "--to", f"{PREDICT}-00001-aaa"))
    assert deployed.changing() == [update_traffic(PREDICT, f"{PREDICT}-00001-aaa")]
    r = failed(deployed.run("deploy.sh", "--rollback", "--to", f"{PUSH}-00003-ccc"))
    assert "not a ready revision" in r.stderr


def test_rollback_dry_run_runs_nothing(deployed):
    serving(deployed, PUSH, "00004-ddd")
    serving(deployed, PREDICT, "00004-ddd")
    r = ok(deployed.run("deploy.sh", "--rollback", "--dry-run"))
    assert deployed.changing() == []
    assert f"+ gcloud run services update-traffic {PUSH}" in r.stdout and f"{PUSH}-00002-bbb=100" in r.stdout
    assert f"+ gcloud run services update-traffic {PREDICT}" in r.stdout


# --- destroy.sh (issue 18, defect 7) ----------------------------------------------------------

STOP_INTAKE = ("terraform destroy -input=false -auto-approve -var project_id=acme-scoring -var region=europe-west1 "
               "-var image_tag=destroy -target=google_storage_notification.input_finalize "
               "-target=google_pubsub_subscription.push -target=google_eventarc_trigger.input_finalized")
DESTROY = ("terraform destroy -input=false -auto-approve -var project_id=acme-scoring -var region=europe-west1 "
           "-var image_tag=destroy")


def with_objects(env: Env) -> None:
    env.write(f"buckets/{BUCKETS[0]}", f"gs://{BUCKETS[0]}/a.csv#1\n")
    env.write(f"buckets/{BUCKETS[1]}", "")


def test_destroy_without_yes_and_without_a_terminal_deletes_nothing(deployed):
    with_objects(deployed)
    before = deployed.state_list()
    r = failed(deployed.run("destroy.sh"))
    assert "--yes" in r.stderr and "Nothing was deleted" in r.stderr
    assert deployed.changing() == []
    assert deployed.state_list() == before


def test_destroy_stops_intake_then_drains_then_empties_then_destroys(deployed):
    with_objects(deployed)
    (deployed.tf / "image.auto.tfvars.json").write_text('{"image_tag": "x"}')
    r = ok(deployed.run("destroy.sh", "--yes"))
    assert deployed.changing() == [
        STOP_INTAKE,
        f"gcloud storage rm --recursive --all-versions --project {PROJECT} gs://{BUCKETS[0]}/**",
        DESTROY,
    ], "the empty output bucket needs no rm"
    # the wait for the pushes in flight comes between stopping intake and emptying
    cmds = deployed.commands()
    assert index(cmds, STOP_INTAKE) < index(cmds, "sleep") < index(cmds, "gcloud storage ls")
    # the push request timeout (push_request_timeout_seconds), less the
    # second or two the script itself took since intake stopped
    (slept,) = deployed.sleeps()
    assert 590 <= slept <= 600, slept
    assert f"waiting {slept}s for the pushes already in flight" in r.stderr
    assert deployed.state_list() == []
    assert not (deployed.tf / "image.auto.tfvars.json").exists()
    assert not (deployed.tf / ".destroy-progress.json").exists()


def test_destroy_stops_the_notification_before_the_subscription(deployed):
    """What `destroy -target` removes, and in which order, is the real terraform's
    call: the notification (which depends on the subscription) goes first."""
    r = ok(deployed.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    gone = [m.group(1) for m in re.finditer(r"^terraform_data\.(\w+)(?:\[[^\]]*\])?: Destruction complete", out, re.M)]
    intake = gone[:gone.index("google_pubsub_subscription__push") + 1]
    assert set(intake) == {"google_pubsub_subscription_iam_member__pubsub_agent_acks_push",
                           "google_storage_notification__input_finalize", "google_pubsub_subscription__push"}, \
        "the first destroy removes intake only"
    assert intake.index("google_storage_notification__input_finalize") < \
        intake.index("google_pubsub_subscription__push"), "the notification goes before the subscription"


def test_destroy_resumes_after_terraform_destroy_failed(tmp_path):
    """The real terraform drops every output when a destroy fails halfway; a
    re-run still knows the project and the buckets and finishes the job."""
    env = Env(tmp_path, faults={"google_storage_bucket.output"})
    env.apply()
    with_objects(env)
    env.fault("google_storage_bucket.output", "destroy", 1, BUCKET_NOT_EMPTY)
    r = failed(env.run("destroy.sh", "--yes"))
    assert "run ./destroy.sh again" in r.stderr
    assert env.outputs() == {}, "terraform dropped the outputs"
    assert env.state_list(), "and some resources are left"
    progress = json.loads((env.tf / ".destroy-progress.json").read_text())
    assert progress["project"] == PROJECT and progress["buckets"] == list(BUCKETS)

    # some time later: the drain is over
    progress["intake_stopped_at"] -= 700
    (env.tf / ".destroy-progress.json").write_text(json.dumps(progress))
    env.clear()
    r = ok(env.run("destroy.sh", "--yes"))
    assert "resuming the destroy" in r.stderr and env.sleeps() == []
    assert env.changing() == [
        STOP_INTAKE,
        f"gcloud storage rm --recursive --all-versions --project {PROJECT} gs://{BUCKETS[0]}/**",
        DESTROY,
    ]
    assert env.state_list() == [] and not (env.tf / ".destroy-progress.json").exists()


def test_destroy_resumes_the_drain_where_it_stopped(deployed):
    ok(deployed.run("destroy.sh", "--yes", "--drain-seconds", "0"))  # a first, complete run ...
    deployed.clear()
    deployed.apply()  # ... and a new deployment, whose destroy is interrupted during the drain:
    (deployed.tf / ".destroy-progress.json").write_text(json.dumps({
        "project": PROJECT, "region": REGION, "buckets": list(BUCKETS), "drain_seconds": 600,
        "intake_stopped_at": int(time.time()) - 400}))
    ok(deployed.run("destroy.sh", "--yes"))
    assert len(deployed.sleeps()) == 1 and 195 <= deployed.sleeps()[0] <= 200, "only what is left of the drain"


def test_destroy_twice_is_harmless(deployed):
    ok(deployed.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    deployed.clear()
    r = ok(deployed.run("destroy.sh", "--yes"))
    assert "nothing to destroy" in r.stderr
    assert deployed.changing() == []


def test_destroy_without_outputs_or_record_needs_the_project(tmp_path):
    env = Env(tmp_path, faults={"google_storage_bucket.output"})
    env.apply()
    env.fault("google_storage_bucket.output", "destroy", 1, BUCKET_NOT_EMPTY)
    failed(env.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    (env.tf / ".destroy-progress.json").unlink()  # as on another machine
    env.clear()
    r = failed(env.run("destroy.sh", "--yes"))
    assert "pass --project ID" in r.stderr and env.changing() == []
    ok(env.run("destroy.sh", "--yes", "--project", PROJECT, "--drain-seconds", "0"))
    assert env.state_list() == []


def test_destroy_skips_a_bucket_that_is_gone(deployed):
    r = ok(deployed.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    assert "is not there" in r.stderr
    assert [c.split()[:2] for c in deployed.changing()] == [["terraform", "destroy"], ["terraform", "destroy"]]
    assert deployed.sleeps() == []


def test_destroy_asks_on_a_terminal(deployed):
    with_objects(deployed)
    with PtyStdin("not-the-project\n") as tty:
        r = failed(deployed.run("destroy.sh", stdin=tty.slave))
    assert "Type the project ID" in r.stderr and "not confirmed" in r.stderr
    assert deployed.changing() == []
    with PtyStdin(PROJECT + "\n") as tty:
        ok(deployed.run("destroy.sh", "--drain-seconds", "0", stdin=tty.slave))
    assert [c.split()[:3] for c in deployed.changing()] == [
        ["terraform", "destroy", "-input=false"], ["gcloud", "storage", "rm"], ["terraform", "destroy", "-input=false"]]


def test_destroy_dry_run_runs_nothing(deployed):
    with_objects(deployed)
    before = deployed.state_list()
    r = ok(deployed.run("destroy.sh", "--dry-run"))
    assert deployed.changing() == [] and deployed.sleeps() == []
    assert "-target=google_pubsub_subscription.push" in r.stdout
    assert "would wait 600s" in r.stderr
    assert "+ gcloud storage rm --recursive --all-versions" in r.stdout
    assert deployed.state_list() == before and not (deployed.tf / ".destroy-progress.json").exists()


PROTECTION_REFUSED = ("Error: cannot destroy service without setting deletion_protection=false and running "
                      "`terraform apply`")


def protection(e: Env) -> dict[str, bool]:
    """deletion_protection of each service (by key) and of the shard job ("job")."""
    state = json.loads((e.tf / "terraform.tfstate").read_text())
    services = next(r for r in state["resources"] if r["name"] == "google_cloud_run_v2_service__services")
    job = next(r for r in state["resources"] if r["name"] == "google_cloud_run_v2_job__shard")
    return {**{i["index_key"]: i["attributes"]["input"]["value"]["deletion_protection"] for i in services["instances"]},
            "job": job["instances"][0]["attributes"]["input"]["value"]["deletion_protection"]}


def unkeyed(addresses: list[str]) -> set[str]:
    """State addresses without their instance keys."""
    return {re.sub(r"\[[^\]]*\]$", "", a) for a in addresses}


def lift_command(stderr: str) -> str:
    (line,) = [x.strip() for x in stderr.splitlines() if x.strip().startswith("terraform -chdir=")]
    return line


def test_destroy_refuses_deletion_protection_before_deleting_anything(deployed):
    """With deletion_protection on, terraform destroy refuses the services at the
    very end: intake would be stopped and the buckets emptied for nothing, and
    a plain re-apply would turn intake back on. destroy.sh reads it from the
    state first and stops, and the command it prints lifts the protection
    without changing anything else."""
    deployed.apply(PROJECT, "0ld", "-var=deletion_protection=true")
    with_objects(deployed)
    before = deployed.state_list()
    for args in (("--yes",), ("--dry-run",)):
        r = failed(deployed.run("destroy.sh", *args))
        assert ("deletion protection is on for google_cloud_run_v2_job.shard google_cloud_run_v2_service.services"
                in r.stderr)
        assert "Nothing was deleted" in r.stderr
    assert deployed.changing() == [] and deployed.sleeps() == []
    assert deployed.state_list() == before and not (deployed.tf / ".destroy-progress.json").exists()

    lift = lift_command(r.stderr)
    assert "-target=google_cloud_run_v2_service.services" in lift and "-var deletion_protection=false" in lift
    assert "-target=google_cloud_run_v2_job.shard" in lift
    ok(deployed.shell(lift + " -input=false -auto-approve"))
    assert protection(deployed) == {"push": False, "predict": False, "job": False}
    assert deployed.state_list() == before
    deployed.clear()
    ok(deployed.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    assert deployed.state_list() == []


def test_lifting_protection_after_intake_stopped_does_not_turn_it_on(deployed):
    """An earlier destroy (before this check) stopped intake and then failed on a
    protected service: the printed command must not bring the notification or
    the push subscription back, as ./setup.sh would."""
    deployed.apply(PROJECT, "0ld", "-var=deletion_protection=true")
    terraform(deployed.tf, "destroy", "-input=false", "-auto-approve", f"-var=project_id={PROJECT}",
              "-var=image_tag=x", "-target=terraform_data.google_storage_notification__input_finalize",
              "-target=terraform_data.google_pubsub_subscription__push")
    intake = ("terraform_data.google_storage_notification__input_finalize",
              "terraform_data.google_pubsub_subscription__push")
    assert not set(intake) & unkeyed(deployed.state_list())
    r = failed(deployed.run("destroy.sh", "--yes"))
    ok(deployed.shell(lift_command(r.stderr) + " -input=false -auto-approve"))
    assert not set(intake) & unkeyed(deployed.state_list()), "intake stays off"
    assert protection(deployed) == {"push": False, "predict": False, "job": False}


def test_destroy_refused_by_protection_says_not_to_reapply(tmp_path):
    """Protection turned on after the check (or a resource it does not know):
    terraform destroy fails, and the message says how to go on without turning
    intake back on; the next run finishes."""
    env = Env(tmp_path, faults={"google_cloud_run_v2_service.services"})
    env.apply()
    env.fault("google_cloud_run_v2_service.services", "destroy", 1, PROTECTION_REFUSED)
    r = failed(env.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    assert "refused a resource with deletion protection" in r.stderr
    assert "do not run ./setup.sh or a plain terraform apply" in r.stderr
    assert "-var deletion_protection=false -target=ADDRESS" in r.stderr
    env.clear()
    ok(env.run("destroy.sh", "--yes"))
    assert env.state_list() == []


def test_destroy_without_state_has_nothing_to_do(env):
    r = ok(env.run("destroy.sh", "--yes"))
    assert "nothing to destroy" in r.stderr
    assert env.changing() == []
