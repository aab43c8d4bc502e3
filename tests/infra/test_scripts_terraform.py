"""What Terraform itself decides, checked with the real terraform binary on the
mirror of terraform/ (tf_mirror.py), and the scripts' gcloud command lines
checked with the real gcloud's argument parser."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import ROOT, TF_DIR, need_tool
from script_harness import (BUCKETS, BUILD_FAILED, PREDICT, PROJECT, PUSH, PUSH_NOT_AUTHORIZED, Env, ok, outputs,
                            real_terraform, state_dependencies, terraform, tf_env, write_mirror)
from tf_mirror import Mirror, mirror_address, read_blocks

SETUP = (ROOT / "setup.sh").read_text()
COMMON = (ROOT / "scripts" / "common.sh").read_text()


def outputs_needed(text: str) -> set[str]:
    """The outputs some script text reads with need_out, also through the
    functions of scripts/common.sh it calls."""
    needed = set(re.findall(r"need_out (\w+)", text))
    for name in re.findall(r"^(\w+)\(\) \{$", COMMON, re.M):
        if re.search(rf"\b{name}\b", text):
            body = COMMON[COMMON.index(f"{name}() {{"):]
            needed |= set(re.findall(r"need_out (\w+)", body[:body.index("\n}\n")]))
    return needed


def setup_targets() -> list[str]:
    """The -target= addresses of setup.sh's first, targeted apply."""
    return re.findall(r"-target=(\S+)", SETUP[SETUP.index("terraform apply: APIs"):SETUP.index("# --- 4.")])


def test_the_mirror_has_every_resource_output_and_variable(mirror_template):
    blocks = read_blocks(TF_DIR)
    mirror = (mirror_template / "main.tf").read_text()
    for b in blocks:
        if b.kind == "resource":
            assert f'resource "terraform_data" "{b.labels[0]}__{b.labels[1]}"' in mirror
        elif b.kind == "data":
            assert f'resource "terraform_data" "data__{b.labels[0]}__{b.labels[1]}"' in mirror
        elif b.kind in ("output", "variable"):
            assert f'{b.kind} "{b.labels[0]}" {{' in mirror
    r = terraform(mirror_template, "validate", "-no-color")
    assert "The configuration is valid" in r.stdout


def test_every_target_in_the_scripts_is_declared():
    """The real terraform silently applies nothing for a -target that names nothing."""
    declared = set(Mirror(TF_DIR).addresses())
    for script in ("setup.sh", "deploy.sh", "destroy.sh"):
        for target in re.findall(r"-target=(\S+)", (ROOT / script).read_text()):
            if re.search(r"[$%]", target):
                continue  # made at run time from the state's own addresses (destroy.sh's lift_protection_command)
            assert target in declared, f"{script}: -target={target} is not declared in terraform/"


def test_outputs_setup_needs_exist_after_its_targeted_apply(tmp_path):
    """Issue 18, defect 1. Terraform writes an output after `apply -target` only when
    it depends on a targeted resource; `region = var.region` never got there and
    setup.sh died with "terraform output has no 'region'" on every run."""
    tf = write_mirror(tmp_path / "tf")
    targets = setup_targets()
    assert "google_artifact_registry_repository.images" in targets
    terraform(tf, "apply", "-input=false", "-auto-approve", f"-var=project_id={PROJECT}",
              *[f"-target={mirror_address(t)}" for t in targets])
    out = outputs(tf)
    # what setup.sh reads between its targeted apply and the full apply
    read = outputs_needed(SETUP[SETUP.index("# --- 3."):SETUP.index("# --- 5.")])
    read |= {"project_id"}  # the state-belongs-to-another-project check of the next run
    assert read >= {"region", "image_uri", "build_service_account", "build_bucket"}
    missing = read - set(out)
    assert not missing, f"after setup.sh's targeted apply, terraform output lacks {sorted(missing)}"
    assert out["project_id"] == PROJECT and out["region"] == "europe-west1"
    assert "push_service_url" not in out, "setup.sh tells a fresh project by the missing service"


def test_the_accounts_the_services_use_are_made_by_the_targeted_apply(tmp_path, deployed_template):
    """Every service account that a Cloud Run service or job runs as (or names),
    that Pub/Sub pushes as or that the Eventarc trigger signs as is created by
    setup.sh's first, targeted apply, minutes before the full apply hands it to
    Cloud Run (a new account is refused there for a minute or three:
    "iam.serviceaccounts.actAs denied"). Which accounts those are is the real
    terraform's recorded dependencies (of every trigger = "pubsub" | "eventarc")."""
    deps = state_dependencies(deployed_template)
    users = [a for a in deps if a.startswith(("terraform_data.google_cloud_run_v2_service__",
                                              "terraform_data.google_cloud_run_v2_job__",
                                              "terraform_data.google_eventarc_trigger__",
                                              "terraform_data.google_pubsub_subscription__"))]
    assert users
    accounts = {d for a in users for d in deps[a] if d.startswith("terraform_data.google_service_account__")}
    assert {"terraform_data.google_service_account__runtime", "terraform_data.google_service_account__predict",
            "terraform_data.google_service_account__push", "terraform_data.google_service_account__shard",
            "terraform_data.google_service_account__events"} <= accounts
    targeted = {mirror_address(t) for t in setup_targets()}
    assert accounts <= targeted, f"setup.sh's targeted apply does not create {sorted(accounts - targeted)}"

    # ... and that apply still creates nothing that needs the image
    tf = write_mirror(tmp_path / "tf")
    terraform(tf, "apply", "-input=false", "-auto-approve", f"-var=project_id={PROJECT}",
              *[f"-target={mirror_address(t)}" for t in setup_targets()])
    made = terraform(tf, "state", "list").stdout.split()
    # (each account of the default settings: trigger = "pubsub", with the shard job)
    made_accounts = {re.sub(r"\[[^\]]*\]$", "", a) for a in made}
    assert accounts - {"terraform_data.google_service_account__events"} <= made_accounts
    assert not [a for a in made if a.startswith(("terraform_data.google_cloud_run", "terraform_data.google_pubsub",
                                                 "terraform_data.google_storage_notification"))], made


def test_log_metric_readers_are_created_after_the_pause(deployed_template):
    """Issue 18, defect 2: the real terraform's recorded dependencies: every SLO and
    alert reading a log-based metric waits for the time_sleep, which waits for
    every log-based metric."""
    deps = state_dependencies(deployed_template)
    pause = "terraform_data.time_sleep__log_metrics"
    metrics = {a for a in deps if a.startswith("terraform_data.google_logging_metric__")}
    assert {m.split("__")[-1] for m in metrics} == {"jobs", "rows_scored", "job_duration", "shard_task_failures"}
    assert metrics <= deps[pause]
    readers = ["terraform_data.google_monitoring_slo__slos",
               "terraform_data.google_monitoring_alert_policy__failed_files",
               "terraform_data.google_monitoring_alert_policy__slo_burn",
               "terraform_data.google_monitoring_dashboard__scorer"]
    for reader in readers:
        assert pause in deps[reader], f"{reader} does not wait for the log-based metrics"


def test_every_slo_has_a_fast_and_a_slow_burn_rate_alert(deployed_template):
    """local.slos and local.burn_windows, as the real terraform expands them."""
    state = json.loads((deployed_template / "terraform.tfstate").read_text())
    keys = {r["name"]: {i.get("index_key") for i in r["instances"]} for r in state["resources"]}
    slos = {"push-availability", "file-latency", "predict-availability", "predict-latency"}
    assert keys["google_monitoring_slo__slos"] == slos
    assert keys["google_monitoring_alert_policy__slo_burn"] == {f"{s}-{w}" for s in slos for w in ("fast", "slow")}


def test_the_notification_is_created_after_the_push_subscription(deployed_template):
    """Issue 18, defect 6: files uploaded before the push subscription existed were
    announced on a topic nobody listened to."""
    deps = state_dependencies(deployed_template)
    assert "terraform_data.google_pubsub_subscription__push" in \
        deps["terraform_data.google_storage_notification__input_finalize"]


def test_push_concurrency_and_slots_are_one_number(tmp_path):
    """Issue 18, defect 4, end to end through the real terraform: one variable
    changes the push service's concurrency and its MAX_CONCURRENT_JOBS together."""
    tf = write_mirror(tmp_path / "tf")
    terraform(tf, "apply", "-input=false", "-auto-approve", f"-var=project_id={PROJECT}", "-var=image_tag=t",
              "-var=max_concurrent_jobs=3", "-var=inline_max_bytes=1000000")
    state = json.loads((tf / "terraform.tfstate").read_text())
    services = next(r for r in state["resources"] if r["name"] == "google_cloud_run_v2_service__services")
    names = {i["index_key"]: i["attributes"]["input"]["value"]["name"] for i in services["instances"]}
    assert names == {"push": PUSH, "predict": PREDICT}
    push_env = outputs_locals(tf, "local.push_env")
    assert push_env["MAX_CONCURRENT_JOBS"] == "3" and push_env["SERVICE_ROLE"] == "push"
    assert push_env["INLINE_MAX_BYTES"] == "1000000"
    assert outputs_locals(tf, "local.predict_env")["SERVICE_ROLE"] == "predict"
    assert "PUSH_AUDIENCE" not in outputs_locals(tf, "local.predict_env")
    assert outputs(tf)["push_request_timeout_seconds"] == 600


def outputs_locals(tf: Path, expr: str) -> dict:
    """A local's value, as the real terraform evaluates it against the state (terraform console)."""
    r = subprocess.run([real_terraform(), f"-chdir={tf}", "console", f"-var=project_id={PROJECT}",
                        "-var=image_tag=t", "-var=max_concurrent_jobs=3", "-var=inline_max_bytes=1000000"],
                       input=f"jsonencode({expr})\n", capture_output=True, text=True, env=tf_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(json.loads(r.stdout.strip()))


# --- gcloud: every command line the scripts send parses --------------------------------------

PARSE_ERROR = re.compile(r"ERROR: \(gcloud[\w.-]*\) (unrecognized arguments|argument |Invalid choice|"
                         r"Invalid value|too few arguments|expected one argument)")


def real_gcloud(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    """The real gcloud with no account, no network and a throw-away config: it
    parses the command line (exit 2 on a parse error), then stops at the missing
    credentials (exit 1) before any request."""
    gcloud = need_tool("gcloud", "install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
    env.update({
        "HOME": str(home), "CLOUDSDK_CONFIG": str(home / "gcloud"),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        # should anything try the network anyway, it fails at once
        "CLOUDSDK_PROXY_TYPE": "http", "CLOUDSDK_PROXY_ADDRESS": "127.0.0.1", "CLOUDSDK_PROXY_PORT": "9",
    })
    return subprocess.run([gcloud, *argv], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_gcloud_command_lines_parse(tmp_path, mirror_template, deployed_template):
    """The stand-in gcloud records what the scripts send; the real gcloud must accept
    every such command line (a misspelt flag is exit 2 before anything happens)."""
    lines: list[list[str]] = []

    def collect(e: Env) -> None:
        lines.extend(c["argv"] for c in e.calls() if c["tool"] == "gcloud")

    fresh = Env(tmp_path / "fresh", mirror_template)
    fresh.write("gcloud_project", PROJECT)
    ok(fresh.run("setup.sh", "--yes"))
    collect(fresh)
    # a build Cloud Build could not push at first: described, and its log pointed at
    slow = Env(tmp_path / "slow", mirror_template)
    slow.write("build_fails", json.dumps({"times": 1, "message": BUILD_FAILED}))
    slow.write("build_info", PUSH_NOT_AUTHORIZED)
    r = ok(slow.run("setup.sh", "--project", PROJECT, "--yes"))
    collect(slow)
    hints = re.findall(r"its log: (gcloud logging read .*)$", r.stderr, re.M)
    assert hints, "no log hint was printed"
    lines.extend(shlex.split(h)[1:] for h in hints)
    docker = Env(tmp_path / "docker", mirror_template)
    ok(docker.run("setup.sh", "--project", PROJECT, "--yes", "--builder", "docker"))
    collect(docker)
    dep = Env(tmp_path / "deploy", deployed_template)
    ok(dep.run("deploy.sh"))
    for service in (PUSH, PREDICT):
        dep.write(f"revisions.{service}.json", json.dumps([
            {"metadata": {"name": f"{service}-2", "creationTimestamp": "2025-01-02T00:00:00Z"},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": f"{service}-1", "creationTimestamp": "2025-01-01T00:00:00Z"},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]))
        dep.write(f"service.{service}.json", json.dumps({"status": {"traffic": [
            {"revisionName": f"{service}-2", "percent": 100}]}}))
    ok(dep.run("deploy.sh", "--rollback"))
    dep.write(f"buckets/{BUCKETS[0]}", f"gs://{BUCKETS[0]}/a.csv\n")
    ok(dep.run("destroy.sh", "--yes", "--drain-seconds", "0"))
    collect(dep)

    unique = list({json.dumps(a): a for a in lines}.values())
    kinds = {" ".join(w for w in a[:4] if not w.startswith("-")) for a in unique}
    for kind in ("services enable", "builds submit", "auth configure-docker", "run services update",
                 "run services update-traffic", "run services describe", "run revisions list", "storage ls",
                 "storage rm", "artifacts docker images describe", "config get-value project", "builds describe",
                 "logging read", "run jobs update", "run jobs describe"):
        assert any(k.startswith(kind) for k in kinds), f"no {kind} call was checked"

    home = tmp_path / "gcloud-home"
    home.mkdir()
    # the checker itself: a misspelt flag is caught
    bad = real_gcloud(["run", "services", "update", PUSH, "--imag", "x"], home)
    assert bad.returncode == 2 and PARSE_ERROR.search(bad.stderr), bad.stderr
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda a: (a, real_gcloud(a, home)), unique))
    bad = [f"gcloud {' '.join(a)}\n  -> exit {r.returncode}: {r.stderr.strip()[:300]}"
           for a, r in results if r.returncode == 2 or PARSE_ERROR.search(r.stderr)]
    assert not bad, "gcloud does not accept:\n" + "\n".join(bad)
