"""The harness of the script tests: setup.sh, deploy.sh and destroy.sh run for
real, against the REAL terraform on a mirror of terraform/ (tf_mirror.py:
built-in terraform_data resources, one per resource, same targets, same
outputs), with recording stand-ins for gcloud, docker and sleep
(stubs/fake_cli.py says what those still assume). git and jq are the real
ones. Each test runs the scripts from a fresh git repository holding a copy of
them, so the image tag is a real commit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, TF_DIR, need_tool
from tf_mirror import Mirror

HERE = Path(__file__).resolve().parent
STUBS = HERE / "stubs"
SCRIPTS = ("setup.sh", "deploy.sh", "destroy.sh")
PROJECT = "acme-scoring"
REGION = "europe-west1"
IMAGE_URI = f"{REGION}-docker.pkg.dev/{PROJECT}/scorer/scorer"
PUSH = "scorer"
PREDICT = "scorer-predict"
SHARD_JOB = "scorer-shard"
BUCKETS = (f"{PROJECT}-scorer-input", f"{PROJECT}-scorer-output")
BUILD_SA = f"scorer-build@{PROJECT}.iam.gserviceaccount.com"
BUILD_BUCKET = f"{PROJECT}-scorer-build"

# Calls that only look: allowed in --dry-run.
READ_ONLY = (
    ("terraform", "output"),
    ("terraform", "init"),
    ("terraform", "state list"),
    ("gcloud", "config get-value"),
    ("gcloud", "artifacts docker images describe"),
    ("gcloud", "run services describe"),
    ("gcloud", "run jobs describe"),
    ("gcloud", "run revisions list"),
    ("gcloud", "builds describe"),
    ("terraform", "show"),
    ("gcloud", "storage ls"),
    ("sleep", ""),
)

# Errors Google's APIs give on a fresh project, as the google provider and
# gcloud print them (seen on real projects; nothing here can reach Google).
SERVICE_DISABLED = (
    "Error: Error creating Repository: googleapi: Error 403: Artifact Registry API has not been used in project "
    "123456789012 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/"
    "artifactregistry.googleapis.com/overview?project=123456789012 then retry. If you enabled this API recently, "
    "wait a few minutes for the action to propagate to our systems and retry.\nDetails:\n[{\"@type\": "
    "\"type.googleapis.com/google.rpc.ErrorInfo\", \"reason\": \"SERVICE_DISABLED\"}]"
)
METRIC_404 = (
    "Error: Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) that match type = "
    "\"logging.googleapis.com/user/scorer_jobs\". If a metric was created recently, it could take up to 10 "
    "minutes to become available. Please try again soon."
)
BUILDER_NOT_YET = (
    f"ERROR: (gcloud.builds.submit) INVALID_ARGUMENT: could not resolve source: googleapi: Error 403: {BUILD_SA} "
    "does not have storage.objects.get access to the Google Cloud Storage object. Permission 'storage.objects.get' "
    "denied on resource (or it may not exist)., forbidden"
)
BUILD_FAILED = ("ERROR: (gcloud.builds.submit) build 0d4a3b1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b completed with status "
                "\"FAILURE\"")
# A build that ran and failed, as `gcloud builds describe --format='value(failureInfo.type,failureInfo.detail)'`
# prints it (tab-separated): the builder's new grants had not reached Cloud Build
# yet (retried), or the code (not retried).
BUILD_ID = "0d4a3b1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
PUSH_NOT_AUTHORIZED = ("PUSH_NOT_AUTHORIZED\tfailed to push an image: denied: Permission \"artifactregistry.repositories."
                       "uploadArtifacts\" denied on resource \"projects/acme-scoring/locations/europe-west1/"
                       "repositories/scorer\" (or it may not exist)")
FETCH_SOURCE_FAILED = ("FETCH_SOURCE_FAILED\tfailed to fetch source: storage.objects.get access to "
                       "gs://acme-scoring-scorer-build/source/1700000000.tgz denied")
USER_BUILD_STEP = ("USER_BUILD_STEP\tBuild step failure: build step 0 \"gcr.io/cloud-builders/docker\" failed: "
                   "step exited with non-zero status: 1")
# The full apply on a fresh project: the runtime account, seconds old, refused
# to the operator creating the service (gcloud and the API write actAs in
# lower case); the Cloud Storage service agent's publisher grant on the topic
# not there yet; the Cloud Run service agent not yet allowed to mint tokens.
ACT_AS_NOT_YET = (
    f"Error: Error creating Service: googleapi: Error 403: Permission 'iam.serviceaccounts.actAs' denied on service "
    f"account scorer-run@{PROJECT}.iam.gserviceaccount.com (or it may not exist).\nDetails:\n[\n  {{\n    \"@type\": "
    "\"type.googleapis.com/google.rpc.ErrorInfo\",\n    \"domain\": \"iam.googleapis.com\",\n    \"metadata\": {\n"
    "      \"permission\": \"iam.serviceaccounts.actAs\"\n    },\n    \"reason\": \"IAM_PERMISSION_DENIED\"\n  }\n]"
)
TOPIC_NOT_YET = (
    f"Error: Error creating notification config for bucket {PROJECT}-scorer-input: googleapi: Error 400: Cloud "
    f"Pub/Sub topic 'projects/{PROJECT}/topics/scorer-input-events' not found, or user "
    "'service-123456789012@gs-project-accounts.iam.gserviceaccount.com' does not have permission to it., invalid"
)
TOPIC_NOT_YET_403 = (
    f"Error: Error creating notification config for bucket {PROJECT}-scorer-input: googleapi: Error 403: The "
    "service account 'service-123456789012@gs-project-accounts.iam.gserviceaccount.com' does not have permission "
    f"to publish messages to to the Cloud Pub/Sub topic '//pubsub.googleapis.com/projects/{PROJECT}/topics/"
    "scorer-input-events', or that topic does not exist., forbidden"
)
TOKENS_NOT_YET = (
    "Error: Error creating Service: googleapi: Error 403: Google Cloud Run Service Agent does not have permission "
    f"to get access tokens for the service account scorer-run@{PROJECT}.iam.gserviceaccount.com. Please give "
    "service-123456789012@serverless-robot-prod.iam.gserviceaccount.com permission "
    "iam.serviceAccounts.getAccessToken on the service account. Alternatively, if the service account is "
    "unspecified or in the same project you are deploying in, ensure that the Service Agent is assigned the Google "
    "Cloud Run Service Agent role roles/run.serviceAgent."
)
BUCKET_NOT_EMPTY = ("Error: Error trying to delete bucket acme-scoring-scorer-output containing objects without "
                    "`force_destroy` set to true")


def real_terraform() -> str:
    path = need_tool("terraform", "install Terraform >= 1.5 (the tests run the real binary on a mirror of "
                                  "terraform/; https://developer.hashicorp.com/terraform/install)")
    if Path(path).resolve() == (STUBS / "terraform").resolve():
        pytest.fail("the terraform on PATH is the test shim", pytrace=False)
    return path


def tf_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"})
    # terraform warns about a TF_CLI_CONFIG_FILE that names a missing file
    if env.get("TF_CLI_CONFIG_FILE") and not Path(env["TF_CLI_CONFIG_FILE"]).exists():
        env["TF_CLI_CONFIG_FILE"] = "/dev/null"
    env.update(extra or {})
    return env


def terraform(tf_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real terraform on a mirror directory (mirror addresses)."""
    r = subprocess.run([real_terraform(), f"-chdir={tf_dir}", *args], env=tf_env(), capture_output=True,
                       text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"terraform {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def write_mirror(out: Path, faults: set[str] | None = None) -> Path:
    Mirror(TF_DIR, faults=faults).write(out)
    terraform(out, "init", "-input=false")
    return out


def outputs(tf_dir: Path) -> dict:
    return {k: v["value"] for k, v in json.loads(terraform(tf_dir, "output", "-json").stdout).items()}


def state_dependencies(tf_dir: Path) -> dict[str, set[str]]:
    """Mirror address (without instance key) -> the dependencies terraform recorded in its state."""
    state = json.loads((tf_dir / "terraform.tfstate").read_text())
    deps: dict[str, set[str]] = {}
    for r in state["resources"]:
        if r["mode"] != "managed":
            continue
        for inst in r["instances"]:
            deps.setdefault(f"{r['type']}.{r['name']}", set()).update(inst.get("dependencies", []))
    return deps


class Env:
    """A repository copy of the scripts, a mirror of terraform/, and the stand-ins' state."""

    def __init__(self, tmp: Path, mirror: Path | None = None, faults: set[str] | None = None):
        need_tool("git", "apt-get install git")
        need_tool("jq", "apt-get install jq (the scripts read terraform output with it)")
        need_tool("python3", "apt-get install python3 (the stand-ins are Python)")
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.repo = tmp / "repo"
        self.state = tmp / "state"
        self.tf = tmp / "tf"
        self.state.mkdir()
        (self.state / "buckets").mkdir()
        self.repo.mkdir()
        for name in SCRIPTS + ("cloudbuild.yaml",):
            shutil.copy2(ROOT / name, self.repo / name)
        shutil.copytree(ROOT / "scripts", self.repo / "scripts")
        (self.repo / "app").mkdir()
        shutil.copy2(ROOT / "app" / "Dockerfile", self.repo / "app" / "Dockerfile")
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "initial")
        self.sha = self.git("rev-parse", "HEAD").strip()
        if faults:
            write_mirror(self.tf, faults)
        else:
            shutil.copytree(mirror, self.tf, symlinks=True)
        self.path = f"{STUBS}{os.pathsep}{os.environ['PATH']}"

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                              cwd=self.repo, check=True, capture_output=True, text=True).stdout

    def write(self, name: str, content: str) -> None:
        (self.state / name).write_text(content)

    def fault(self, address: str, when: str, times: int, message: str) -> None:
        """The next `times` creates (or destroys) of `address` fail with `message` (tf_mirror faults)."""
        faults = self.tf / ".faults"
        faults.mkdir(exist_ok=True)
        (faults / f"{address}.{when}").write_text(json.dumps({"times": times, "message": message}))

    def fired(self, address: str, when: str) -> int:
        path = self.tf / ".faults" / f"{address}.{when}"
        return json.loads(path.read_text()).get("fired", 0) if path.exists() else 0

    def apply(self, project: str = PROJECT, tag: str = "0ld", *extra: str) -> None:
        """A full apply, as setup.sh's last step leaves the state (the real terraform)."""
        terraform(self.tf, "apply", "-input=false", "-auto-approve", f"-var=project_id={project}",
                  f"-var=image_tag={tag}", *extra)

    def outputs(self) -> dict:
        return outputs(self.tf)

    def state_list(self) -> list[str]:
        if not (self.tf / "terraform.tfstate").exists():
            return []  # (`terraform state list` fails without a state file)
        return terraform(self.tf, "state", "list").stdout.split()

    def environ(self, path: str | None = None, env: dict | None = None) -> dict:
        environ = {k: v for k, v in tf_env().items() if k not in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")}
        environ.update({"PATH": path or self.path, "STUB_STATE": str(self.state), "SCORER_TF_DIR": str(self.tf),
                        "SCORER_REAL_TERRAFORM": real_terraform()}, **(env or {}))
        return environ

    def run(self, script: str, *args: str, path: str | None = None, stdin=subprocess.DEVNULL,
            env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.repo / script), *args], cwd=cwd or self.repo, env=self.environ(path, env),
                              stdin=stdin, capture_output=True, text=True, timeout=300)

    def shell(self, command: str) -> subprocess.CompletedProcess:
        """A command line an operator is told to type, with the stand-ins on PATH."""
        return subprocess.run(["bash", "-c", command], cwd=self.repo, env=self.environ(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)

    def calls(self) -> list[dict]:
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def commands(self) -> list[str]:
        """Each call as one string: "gcloud run services update scorer ..." (terraform without -chdir)."""
        return [" ".join([c["tool"], *[a for a in c["argv"] if not a.startswith("-chdir=")]]) for c in self.calls()]

    def changing(self) -> list[str]:
        return [c for c in self.commands()
                if not any(c.startswith(f"{t} {w}".rstrip()) for t, w in READ_ONLY)]

    def sleeps(self) -> list[int]:
        return [int(c["argv"][0]) for c in self.calls() if c["tool"] == "sleep"]

    def clear(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)


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


# --- the real terraform on a mirror, with -var settings (test_shard_job.py, test_eventarc.py) ----


def vars_of(variables) -> list[str]:
    return [f"-var=project_id={PROJECT}", "-var=image_tag=t", *[f"-var={v}" for v in variables]]


def applied(mirror: Path, tmp: Path, *variables: str) -> Path:
    """A copy of the (initialised) mirror after a full apply with these -var settings."""
    out = tmp / "tf"
    shutil.copytree(mirror, out, symlinks=True)
    terraform(out, "apply", "-input=false", "-auto-approve", *vars_of(variables))
    return out


def console(tf: Path, expr: str, *variables: str):
    """expr as the real terraform evaluates it against the state (terraform console)."""
    r = subprocess.run([real_terraform(), f"-chdir={tf}", "console", *vars_of(variables)],
                       input=f"jsonencode({expr})\n", capture_output=True, text=True, env=tf_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(json.loads(r.stdout.strip()))


def instances(tf: Path) -> dict[str, list[dict]]:
    """Mirror resource name (google_x__y) -> the `input` of each of its instances in the state."""
    state = json.loads((tf / "terraform.tfstate").read_text())
    return {r["name"]: [i["attributes"]["input"]["value"] for i in r["instances"]]
            for r in state["resources"] if r["mode"] == "managed"}


def plan(mirror: Path, *variables: str) -> subprocess.CompletedProcess:
    return terraform(mirror, "plan", "-input=false", "-no-color", *vars_of(variables), check=False)


def said(r: subprocess.CompletedProcess) -> str:
    """What a command printed, its lines joined and its whitespace collapsed
    (terraform wraps long messages)."""
    return " ".join((r.stdout + r.stderr).split())
