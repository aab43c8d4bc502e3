"""The schema check (check_terraform_schema.py) passes on terraform/ and
catches what `terraform validate` would: unknown types, misspelt arguments
and blocks, missing required ones, blocks written as arguments, references to
undeclared things or to attributes a type does not export; for the google,
google-beta and time providers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TF_DIR, need_env_path

CHECKER = Path(__file__).resolve().parent / "check_terraform_schema.py"


@pytest.fixture(scope="module")
def provider():
    return need_env_path("SCORER_CDKTF_GOOGLE", "node_modules/@cdktf/provider-google (16.12.1)")


def check(provider: Path, tf_dir: Path) -> subprocess.CompletedProcess:
    cache = Path(__import__("os").environ.get("SCORER_SCHEMA_CACHE", "")) or None
    args = [sys.executable, str(CHECKER), "--provider-package", str(provider)]
    for name in ("google-beta", "time"):
        package = provider.parent / f"provider-{name}"
        if not package.is_dir():
            pytest.fail(f"{package} is missing: run these tests through .ci/infra-checks.sh, which installs "
                        f"@cdktf/provider-{name}", pytrace=False)
        args += ["--provider", f"{name}={package}"]
    if cache:
        args += ["--cache", str(cache)]
    return subprocess.run(args + [str(tf_dir)], capture_output=True, text=True)


def test_the_configuration_matches_the_provider_schema(provider):
    r = check(provider, TF_DIR)
    assert r.returncode == 0, r.stderr
    assert "match the google provider schema" in r.stdout


MUTATIONS = {
    "unknown resource type": ("cloud_run.tf", 'resource "google_cloud_run_v2_service"',
                              'resource "google_cloud_run_v3_service"',
                              'no resource type "google_cloud_run_v3_service"'),
    "misspelt argument": ("pubsub.tf", "ack_deadline_seconds = var.", "ack_deadline_secs = var.",
                          'unknown argument or block "ack_deadline_secs" (did you mean "ack_deadline_seconds"?)'),
    "misspelt nested block": ("pubsub.tf", "oidc_token {", "oidc_tokens {",
                              'push_config: unknown argument or block "oidc_tokens"'),
    "misspelt dynamic block content": ("cloud_run.tf", "value = env.value", "valu = env.value",
                                       'containers > env: unknown argument or block "valu"'),
    "missing required argument": ("cloud_run.tf", 'image = "${local.image_uri}:${var.image_tag}"', "",
                                  'template > containers: required argument "image" is missing'),
    "block written as an argument": ("storage.tf", "versioning {", "versioning = {",
                                     '"versioning" is a block'),
    "unknown attribute in a reference": ("iam.tf", "google_service_account.runtime.member",
                                         "google_service_account.runtime.members",
                                         'google_service_account.runtime has no attribute "members"'),
    "undeclared resource": ("pubsub.tf", "= google_pubsub_topic.dead_letters[0].id",
                            "= google_pubsub_topic.dlq[0].id", "reference to undeclared google_pubsub_topic.dlq"),
    "undeclared variable": ("cloud_run.tf", "var.predict_concurrency", "var.concurrency",
                            "undeclared variable var.concurrency"),
    "google-beta resource without its provider": ("iam.tf", "provider = google-beta", "",
                                                  "it exists only in google-beta (set provider = google-beta)"),
    "provider from elsewhere": ("versions.tf", 'source  = "hashicorp/time"', 'source  = "example/time"',
                                'required_providers.time.source is "example/time", not "hashicorp/time"'),
    "misspelt time_sleep argument": ("monitoring.tf", "create_duration =", "create_durations =",
                                     'unknown argument or block "create_durations"'),
    "moved to nowhere": ("moved.tf", 'to   = google_cloud_run_v2_service.services["predict"]',
                         'to   = google_cloud_run_v2_service.service["predict"]',
                         'moved block points at undeclared google_cloud_run_v2_service.service["predict"]'),
    "moved to an instance of a single resource": ("moved.tf", 'to   = google_monitoring_slo.slos["file-latency"]',
                                                  'to   = google_monitoring_custom_service.scorer["file-latency"]',
                                                  "which has neither count nor for_each"),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_mistakes_are_caught(provider, tmp_path, name):
    file, old, new, expected = MUTATIONS[name]
    copy = tmp_path / "terraform"
    shutil.copytree(TF_DIR, copy, ignore=shutil.ignore_patterns(".terraform"))
    text = (copy / file).read_text()
    assert old in text, f"mutation no longer applies: {old!r} not in {file}"
    (copy / file).write_text(text.replace(old, new, 1))
    r = check(provider, copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert expected in r.stderr
