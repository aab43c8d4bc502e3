"""setup.sh, deploy.sh and destroy.sh, run for real against recording stand-ins.

terraform, gcloud and docker are replaced by tests/infra/stubs/ (they record
their arguments and answer from files, see fake_cli.py); git and jq are the
real ones. Each test runs the scripts from a fresh git repository holding a
copy of them, so the image tag is a real commit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, need_tool

STUBS = Path(__file__).resolve().parent / "stubs"
SCRIPTS = ("setup.sh", "deploy.sh", "destroy.sh")
PROJECT = "acme-scoring"
REGION = "europe-west1"
IMAGE_URI = f"{REGION}-docker.pkg.dev/{PROJECT}/scorer/scorer"
OUTPUTS = {
    "project_id": PROJECT,
    "region": REGION,
    "input_bucket": f"{PROJECT}-scorer-input",
    "output_bucket": f"{PROJECT}-scorer-output",
    "image_uri": IMAGE_URI,
    "service_name": "scorer",
    "service_url": "https://scorer-abc-ew.a.run.app",
    "topic": f"projects/{PROJECT}/topics/scorer-input-events",
    "dead_letter_topic": f"projects/{PROJECT}/topics/scorer-dead-letters",
    "dead_letter_subscription": f"projects/{PROJECT}/subscriptions/scorer-dead-letters-pull",
    "build_service_account": f"scorer-build@{PROJECT}.iam.gserviceaccount.com",
    "build_bucket": f"{PROJECT}-scorer-build",
}

# Calls that only look: allowed in --dry-run.
READ_ONLY = (
    ("terraform", "output"),
    ("gcloud", "config get-value"),
    ("gcloud", "artifacts docker images describe"),
    ("gcloud", "run services describe"),
    ("gcloud", "run revisions list"),
    ("gcloud", "storage ls"),
)


def tf_outputs(values: dict) -> str:
    return json.dumps({k: {"sensitive": False, "type": "string", "value": v} for k, v in values.items()})


class Env:
    def __init__(self, tmp: Path):
        need_tool("git", "apt-get install git")
        need_tool("jq", "apt-get install jq (the scripts read terraform output with it)")
        self.repo = tmp / "repo"
        self.state = tmp / "state"
        self.state.mkdir()
        (self.state / "buckets").mkdir()
        self.repo.mkdir()
        for name in SCRIPTS + ("cloudbuild.yaml",):
            shutil.copy2(ROOT / name, self.repo / name)
        (self.repo / "app").mkdir()
        shutil.copy2(ROOT / "app" / "Dockerfile", self.repo / "app" / "Dockerfile")
        shutil.copytree(ROOT / "terraform", self.repo / "terraform",
                        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfvars.json"))
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "initial")
        self.sha = self.git("rev-parse", "HEAD").strip()
        self.path = f"{STUBS}{os.pathsep}{os.environ['PATH']}"

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                              cwd=self.repo, check=True, capture_output=True, text=True).stdout

    def write(self, name: str, content: str) -> None:
        (self.state / name).write_text(content)

    def deployed(self, **overrides) -> None:
        """State of a project where setup.sh has run."""
        self.write("outputs.json", tf_outputs({**OUTPUTS, **overrides}))

    def run(self, script: str, *args: str, path: str | None = None, stdin=subprocess.DEVNULL,
            env: dict | None = None) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")}
        environ.update({"PATH": path or self.path, "STUB_STATE": str(self.state)}, **(env or {}))
        return subprocess.run([str(self.repo / script), *args], cwd=self.repo, env=environ, stdin=stdin,
                              capture_output=True, text=True, timeout=60)

    def calls(self) -> list[dict]:
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def commands(self) -> list[str]:
        """Each call as one string: "gcloud run services update scorer ..." (terraform without -chdir)."""
        return [" ".join([c["tool"], *[a for a in c["argv"] if not a.startswith("-chdir=")]]) for c in self.calls()]

    def changing(self) -> list[str]:
        return [c for c in self.commands() if not any(c.startswith(f"{t} {w}") for t, w in READ_ONLY)]

    def clear(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def failed(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode != 0, f"expected a failure\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def index(commands: list[str], prefix: str) -> int:
    for i, c in enumerate(commands):
        if c.startswith(prefix):
            return i
    raise AssertionError(f"no call starting with {prefix!r} in:\n" + "\n".join(commands))


# --- every script ------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_strict_bash_and_executable(script):
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "terraform output -json" in text or "output -json" in text


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
    assert r.returncode == 2 and "unknown option: --frobnicate" in r.stderr
    assert env.calls() == []


def restricted_path(tmp_path: Path, without: str) -> str:
    """A PATH with the stubs and the system tools the scripts use, minus one tool."""
    stubs = tmp_path / "stubs-bin"
    stubs.mkdir()
    for tool in ("terraform", "gcloud", "docker"):
        if tool != without:
            (stubs / tool).symlink_to(STUBS / tool)
    system = tmp_path / "system-bin"
    system.mkdir()
    # the stubs run on this interpreter (a pyenv shim would need pyenv on PATH)
    (system / "python3").symlink_to(os.path.realpath(sys.executable))
    for tool in ("bash", "env", "git", "jq", "dirname", "date", "cat", "rm", "grep", "sed"):
        if tool != without:
            (system / tool).symlink_to(need_tool(tool, f"install {tool}"))
    return f"{stubs}{os.pathsep}{system}"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("missing", ["terraform", "gcloud", "jq"])
def test_a_missing_tool_is_named(env, tmp_path, script, missing):
    env.deployed()
    r = failed(env.run(script, "--yes" if script != "deploy.sh" else "--dry-run",
                       path=restricted_path(tmp_path, missing), env={"GOOGLE_CLOUD_PROJECT": PROJECT}))
    assert f"missing tool(s): {missing}" in r.stderr
    assert env.calls() == []


def test_docker_is_needed_only_for_the_docker_builder(env, tmp_path):
    env.deployed()
    path = restricted_path(tmp_path, "docker")
    r = failed(env.run("deploy.sh", "--builder", "docker", path=path))
    assert "missing tool(s): docker" in r.stderr
    ok(env.run("deploy.sh", "--dry-run", path=path))


# --- setup.sh ------------------------------------------------------------------------------


def test_setup_names_an_unset_project(env):
    r = failed(env.run("setup.sh", "--yes"))
    assert "no Google Cloud project set" in r.stderr and "--project" in r.stderr
    assert env.changing() == []


def test_setup_takes_the_project_from_gcloud_config(env):
    env.write("gcloud_project", PROJECT)
    env.write("outputs.apply.json", tf_outputs(OUTPUTS))
    ok(env.run("setup.sh", "--yes"))
    assert any(f"project_id={PROJECT}" in c for c in env.commands() if c.startswith("terraform apply"))


def test_setup_on_a_fresh_project(env):
    env.write("outputs.apply.json", tf_outputs(OUTPUTS))
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    cmds = env.changing()
    image = f"{IMAGE_URI}:{env.sha}"

    enable = index(cmds, "gcloud services enable")
    init = index(cmds, "terraform init")
    targeted = index(cmds, "terraform apply")
    agent = index(cmds, "gcloud beta services identity create --service=pubsub.googleapis.com")
    build = index(cmds, "gcloud builds submit")
    full = max(i for i, c in enumerate(cmds) if c.startswith("terraform apply"))
    assert enable < init < targeted < agent < build < full

    assert "serviceusage.googleapis.com" in cmds[enable] and "cloudresourcemanager.googleapis.com" in cmds[enable]
    assert "-target=google_artifact_registry_repository.images" in cmds[targeted]
    assert "-target=google_project_service.apis" in cmds[targeted]
    assert f"-var project_id={PROJECT}" in cmds[targeted] and "-auto-approve" in cmds[targeted]

    b = cmds[build]
    assert f"--substitutions _IMAGE={image},_GIT_COMMIT={env.sha}" in b
    assert f"--config {env.repo}/cloudbuild.yaml" in b and f"gcloud builds submit {env.repo} " in b
    assert f"--service-account projects/{PROJECT}/serviceAccounts/{OUTPUTS['build_service_account']}" in b
    assert f"--gcs-source-staging-dir gs://{OUTPUTS['build_bucket']}/source" in b

    assert "-target" not in cmds[full] and f"-var image_tag={env.sha}" in cmds[full]
    tfvars = json.loads((env.repo / "terraform" / "image.auto.tfvars.json").read_text())
    assert tfvars == {"image_tag": env.sha}
    assert f"gsutil cp data/scl_flights_2017.csv gs://{OUTPUTS['input_bucket']}/" in r.stdout
    assert not any(c.startswith(("docker", "gcloud run")) for c in cmds)


def test_setup_twice_is_harmless(env):
    env.write("outputs.apply.json", tf_outputs(OUTPUTS))
    ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    first = env.changing()
    env.clear()
    ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    second = env.changing()
    assert [c for c in first if not c.startswith("gcloud builds submit")] == second, \
        "the second run repeats the idempotent steps and builds nothing"
    assert not any("builds submit" in c for c in second)
    assert (env.state / "images").read_text().split() == [f"{IMAGE_URI}:{env.sha}"]


def test_setup_after_the_service_exists_builds_nothing(env):
    """New code is deploy.sh's business: a later setup (new commit) only applies."""
    env.deployed()
    (env.repo / "terraform" / "image.auto.tfvars.json").write_text('{"image_tag": "0ld"}')
    env.git("commit", "-q", "--allow-empty", "-m", "next")
    r = ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    cmds = env.changing()
    assert not any(c.startswith(("gcloud builds", "docker")) for c in cmds)
    assert cmds[-1].startswith("terraform apply") and cmds[-1].endswith("-var image_tag=0ld")
    assert "./deploy.sh" in r.stderr
    assert json.loads((env.repo / "terraform" / "image.auto.tfvars.json").read_text()) == {"image_tag": "0ld"}


def test_setup_reuses_an_image_built_by_an_interrupted_run(env):
    env.deployed(service_url="")
    env.write("images", f"{IMAGE_URI}:{env.sha}\n")
    ok(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert not any("builds submit" in c for c in env.changing())
    assert env.changing()[-1].endswith(f"-var image_tag={env.sha}")


def test_setup_refuses_a_state_of_another_project(env):
    env.deployed(project_id="someone-elses")
    r = failed(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "belongs to project 'someone-elses'" in r.stderr
    assert not any(c.startswith("terraform apply") for c in env.changing())


def test_setup_without_a_terminal_needs_yes(env):
    r = failed(env.run("setup.sh", "--project", PROJECT))
    assert "--yes" in r.stderr
    assert env.changing() == []


def test_setup_interactive_apply_asks_terraform_for_approval(env):
    env.write("outputs.apply.json", tf_outputs(OUTPUTS))
    with PtyStdin("") as tty:
        ok(env.run("setup.sh", "--project", PROJECT, stdin=tty.slave))
    applies = [c for c in env.changing() if c.startswith("terraform apply")]
    assert len(applies) == 2 and not any("-auto-approve" in c for c in applies)


def test_setup_region_is_passed_to_terraform(env):
    env.write("outputs.apply.json", tf_outputs({**OUTPUTS, "region": "us-central1"}))
    ok(env.run("setup.sh", "--project", PROJECT, "--region", "us-central1", "--yes"))
    applies = [c for c in env.changing() if c.startswith("terraform apply")]
    assert all("-var region=us-central1" in c for c in applies)
    assert "--region us-central1" in next(c for c in env.changing() if "builds submit" in c)


def test_setup_build_failure_stops_before_the_service(env):
    env.write("outputs.apply.json", tf_outputs(OUTPUTS))
    env.write("build_fails", "")
    r = failed(env.run("setup.sh", "--project", PROJECT, "--yes"))
    assert "run ./setup.sh again" in r.stderr
    assert len([c for c in env.changing() if c.startswith("terraform apply")]) == 1


def test_setup_dry_run_runs_nothing(env):
    r = ok(env.run("setup.sh", "--project", PROJECT, "--dry-run"))
    assert env.changing() == []
    printed = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert printed[0].startswith("+ gcloud services enable")
    assert any(p.startswith("+ terraform -chdir=") and " apply " in p and "-target=" in p for p in printed)
    assert any(p.startswith("+ gcloud builds submit") and "_IMAGE=\\<image_uri\\>:" in p for p in printed)
    assert any(p.startswith("+ write ") and "image.auto.tfvars.json" in p for p in printed)
    assert not (env.repo / "terraform" / "image.auto.tfvars.json").exists()


def test_setup_dry_run_with_state_prints_real_names(env):
    env.deployed(service_url="")  # an earlier run stopped before the service
    r = ok(env.run("setup.sh", "--project", PROJECT, "--dry-run"))
    assert env.changing() == []
    assert f"_IMAGE={IMAGE_URI}:{env.sha}" in r.stdout


def test_setup_with_the_docker_builder(env):
    env.write("outputs.apply.json", tf_outputs(OUTPUTS))
    ok(env.run("setup.sh", "--project", PROJECT, "--yes", "--builder", "docker"))
    cmds = env.changing()
    image = f"{IMAGE_URI}:{env.sha}"
    assert f"docker build --file {env.repo}/app/Dockerfile --tag {image}" in cmds[index(cmds, "docker build")]
    assert cmds[index(cmds, "docker push")] == f"docker push {image}"
    assert "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet" in cmds
    assert not any("builds submit" in c for c in cmds)


# --- deploy.sh ------------------------------------------------------------------------------


def test_deploy_pushes_the_commit_tagged_image_and_rolls_traffic(env):
    env.deployed()
    env.write("latest_revision", "scorer-00007-xyz")
    r = ok(env.run("deploy.sh"))
    cmds = env.changing()
    image = f"{IMAGE_URI}:{env.sha}"
    gc = f"--project {PROJECT} --region {REGION}"
    assert cmds == [
        f"gcloud builds submit {env.repo} --project {PROJECT} --region {REGION} --config {env.repo}/cloudbuild.yaml "
        f"--substitutions _IMAGE={image},_GIT_COMMIT={env.sha} "
        f"--service-account projects/{PROJECT}/serviceAccounts/{OUTPUTS['build_service_account']} "
        f"--gcs-source-staging-dir gs://{OUTPUTS['build_bucket']}/source",
        f"gcloud run services update scorer {gc} --image {image} --quiet",
        f"gcloud run services update-traffic scorer {gc} --to-latest --quiet",
    ]
    assert r.stdout.strip().splitlines()[-1] == "scorer-00007-xyz", "prints the new revision"
    assert f"{IMAGE_URI}:{env.sha}" in (env.state / "images").read_text()


def test_deploy_reuses_an_image_that_exists(env):
    env.deployed()
    env.write("images", f"{IMAGE_URI}:{env.sha}\n")
    ok(env.run("deploy.sh"))
    cmds = env.changing()
    assert not any("builds submit" in c for c in cmds)
    assert cmds[0].startswith("gcloud run services update scorer") and f"--image {IMAGE_URI}:{env.sha}" in cmds[0]


def test_deploy_with_the_docker_builder(env):
    env.deployed()
    ok(env.run("deploy.sh", "--builder", "docker"))
    cmds = env.changing()
    image = f"{IMAGE_URI}:{env.sha}"
    assert cmds[:3] == [
        "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet",
        f"docker build --file {env.repo}/app/Dockerfile --tag {image} "
        f"--label org.opencontainers.image.revision={env.sha} {env.repo}",
        f"docker push {image}",
    ]
    assert cmds[3].startswith("gcloud run services update scorer")


def test_deploy_refuses_uncommitted_changes_unless_allowed(env):
    env.deployed()
    (env.repo / "setup.sh").write_text((env.repo / "setup.sh").read_text() + "\n# local edit\n")
    r = failed(env.run("deploy.sh"))
    assert "uncommitted changes" in r.stderr and env.changing() == []
    ok(env.run("deploy.sh", "--allow-dirty"))
    update = next(c for c in env.changing() if c.startswith("gcloud run services update scorer"))
    assert f"--image {IMAGE_URI}:{env.sha}-dirty-" in update


def test_deploy_without_state_names_the_missing_project(env):
    r = failed(env.run("deploy.sh"))
    assert "no Google Cloud project" in r.stderr and "setup.sh" in r.stderr
    assert env.changing() == []


def test_deploy_when_terraform_output_fails(env):
    env.write("output_fails", "")
    r = failed(env.run("deploy.sh"))
    assert "terraform output" in r.stderr
    assert env.changing() == []


def test_deploy_dry_run_runs_nothing(env):
    env.deployed()
    r = ok(env.run("deploy.sh", "--dry-run"))
    assert env.changing() == []
    printed = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert [p.split()[1:4] for p in printed] == [["gcloud", "builds", "submit"], ["gcloud", "run", "services"],
                                                 ["gcloud", "run", "services"]]
    assert f"--image {IMAGE_URI}:{env.sha}" in printed[1] and "--to-latest" in printed[2]


# --- deploy.sh --rollback --------------------------------------------------------------------


def revision(name: str, created: str, ready: bool = True) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


REVISIONS = [
    revision("scorer-00004-ddd", "2025-01-04T10:00:00.000000Z"),
    revision("scorer-00003-ccc", "2025-01-03T10:00:00.000000Z", ready=False),
    revision("scorer-00002-bbb", "2025-01-02T10:00:00.000000Z"),
    revision("scorer-00001-aaa", "2025-01-01T10:00:00.000000Z"),
]


def serving(env: Env, name: str, latest: bool = True) -> None:
    env.write("service.json", json.dumps({"status": {
        "latestReadyRevisionName": "scorer-00004-ddd",
        "traffic": [{"revisionName": name, "percent": 100, "latestRevision": latest}],
    }}))


def test_rollback_targets_the_previous_ready_revision(env):
    env.deployed()
    env.write("revisions.json", json.dumps(REVISIONS))
    serving(env, "scorer-00004-ddd")
    r = ok(env.run("deploy.sh", "--rollback"))
    assert env.changing() == [
        f"gcloud run services update-traffic scorer --project {PROJECT} --region {REGION} "
        "--to-revisions scorer-00002-bbb=100"
    ], "skips the revision that never became ready"
    assert r.stdout.strip() == "scorer-00002-bbb"


def test_rollback_twice_goes_one_further_back(env):
    env.deployed()
    env.write("revisions.json", json.dumps(REVISIONS))
    serving(env, "scorer-00002-bbb", latest=False)
    ok(env.run("deploy.sh", "--rollback"))
    assert env.changing()[-1].endswith("--to-revisions scorer-00001-aaa=100")


def test_rollback_without_an_older_ready_revision_changes_nothing(env):
    env.deployed()
    env.write("revisions.json", json.dumps(REVISIONS))
    serving(env, "scorer-00001-aaa", latest=False)
    r = failed(env.run("deploy.sh", "--rollback"))
    assert "nothing to roll back to" in r.stderr
    assert env.changing() == []


def test_rollback_to_a_named_revision(env):
    env.deployed()
    env.write("revisions.json", json.dumps(REVISIONS))
    serving(env, "scorer-00004-ddd")
    ok(env.run("deploy.sh", "--rollback", "--to", "scorer-00001-aaa"))
    assert env.changing()[-1].endswith("--to-revisions scorer-00001-aaa=100")
    r = failed(env.run("deploy.sh", "--rollback", "--to", "scorer-00003-ccc"))
    assert "not a ready revision" in r.stderr


def test_rollback_dry_run_runs_nothing(env):
    env.deployed()
    env.write("revisions.json", json.dumps(REVISIONS))
    serving(env, "scorer-00004-ddd")
    r = ok(env.run("deploy.sh", "--rollback", "--dry-run"))
    assert env.changing() == []
    assert "+ gcloud run services update-traffic scorer" in r.stdout and "scorer-00002-bbb=100" in r.stdout


# --- destroy.sh ------------------------------------------------------------------------------


def test_destroy_without_yes_and_without_a_terminal_deletes_nothing(env):
    env.deployed()
    env.write("buckets/acme-scoring-scorer-input", "gs://acme-scoring-scorer-input/a.csv\n")
    r = failed(env.run("destroy.sh"))
    assert "--yes" in r.stderr and "Nothing was deleted" in r.stderr
    assert env.changing() == []
    assert (env.state / "outputs.json").exists()


def test_destroy_with_yes_empties_the_buckets_then_destroys(env):
    env.deployed()
    env.write("buckets/acme-scoring-scorer-input", "gs://acme-scoring-scorer-input/a.csv\n")
    env.write("buckets/acme-scoring-scorer-output", "")
    (env.repo / "terraform" / "image.auto.tfvars.json").write_text('{"image_tag": "x"}')
    ok(env.run("destroy.sh", "--yes"))
    assert env.changing() == [
        f"gcloud storage rm --recursive --all-versions --project {PROJECT} gs://acme-scoring-scorer-input/**",
        f"terraform destroy -input=false -auto-approve -var project_id={PROJECT} -var region={REGION} "
        "-var image_tag=destroy",
    ], "the empty output bucket needs no rm"
    assert not (env.repo / "terraform" / "image.auto.tfvars.json").exists()


def test_destroy_skips_a_bucket_that_is_gone(env):
    env.deployed()
    r = ok(env.run("destroy.sh", "--yes"))
    assert "is not there" in r.stderr
    assert [c.split()[:2] for c in env.changing()] == [["terraform", "destroy"]]


def test_destroy_asks_on_a_terminal(env):
    env.deployed()
    env.write("buckets/acme-scoring-scorer-input", "gs://acme-scoring-scorer-input/a.csv\n")
    with PtyStdin("not-the-project\n") as tty:
        r = failed(env.run("destroy.sh", stdin=tty.slave))
    assert "Type the project ID" in r.stderr and "not confirmed" in r.stderr
    assert env.changing() == []
    with PtyStdin(PROJECT + "\n") as tty:
        ok(env.run("destroy.sh", stdin=tty.slave))
    assert [c.split()[:3] for c in env.changing()] == [["gcloud", "storage", "rm"], ["terraform", "destroy", "-input=false"]]


def test_destroy_dry_run_runs_nothing(env):
    env.deployed()
    env.write("buckets/acme-scoring-scorer-input", "gs://acme-scoring-scorer-input/a.csv\n")
    r = ok(env.run("destroy.sh", "--dry-run"))
    assert env.changing() == []
    assert "+ gcloud storage rm --recursive --all-versions" in r.stdout
    assert "+ terraform -chdir=" in r.stdout and " destroy " in r.stdout


def test_destroy_without_state_names_the_missing_project(env):
    r = failed(env.run("destroy.sh", "--yes"))
    assert "no Google Cloud project" in r.stderr
    assert env.changing() == []


class PtyStdin:
    """A pseudo-terminal as stdin, with `answer` already typed into it."""

    def __init__(self, answer: str):
        self.answer = answer

    def __enter__(self):
        import pty

        self.master, self.slave = pty.openpty()
        if self.answer:
            os.write(self.master, self.answer.encode())
        return self

    def __exit__(self, *exc):
        os.close(self.master)
        os.close(self.slave)
