"""Stand-ins for gcloud, docker and sleep in the script tests; the real
terraform runs (see ./terraform and ../tf_mirror.py).

Each call is appended to $STUB_STATE/calls.jsonl as {"tool", "argv", "cwd"},
and answered from files in $STUB_STATE that the test writes:

  gcloud_project           what `gcloud config get-value project` prints
  images                   one image reference a line: the ones that exist in
                           Artifact Registry (`builds submit` / `docker push` add theirs)
  build_fails              JSON {"times": N, "message": M}: the next N
                           `gcloud builds submit` fail, printing M (no file: they succeed)
  build_info               what `gcloud builds describe ID --format=value(failureInfo.type,
                           failureInfo.detail)` prints: "TYPE<tab>DETAIL" (no file: nothing)
  service.<name>.json      `gcloud run services describe <name> --format=json`
  latest_revision.<name>   `gcloud run services describe <name> --format=value(...)`
  revisions.<name>.json    `gcloud run revisions list --service <name> --format=json`
  update_fails.<name>      if present, `gcloud run services update <name>` (or
                           `gcloud run jobs update <name>`) fails
  job_image.<name>         the image `gcloud run jobs describe <name> --format=value(...)`
                           prints (default: <the image_uri of the tests>:0ld)
  buckets/<name>           `gcloud storage ls gs://<name>` prints this (absent: no bucket)

What these stand-ins still assume, and why it is safe:
  - gcloud's answers (the JSON shapes of `run services describe` and `run
    revisions list`, the error texts of a failing build or of a fresh project's
    propagation delay) are Google's API behaviour, which nothing here can
    reach; they are written from the documented v1 (Knative) resource shape and
    from errors seen on real projects. That every command line the scripts
    send is one gcloud accepts is checked with the real gcloud's parser
    (test_gcloud_command_lines_parse).
  - `sleep` returns at once and records its argument: the tests check how long
    the scripts would wait (backoff, drain) without waiting.
  - docker only records: no container engine runs here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _state() -> Path:
    state = os.environ.get("STUB_STATE")
    if not state:
        sys.exit("fake_cli: STUB_STATE is not set")
    return Path(state)


def _read(path: Path, default: str = "") -> str:
    return path.read_text() if path.exists() else default


def _flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _positional(argv: list[str]) -> list[str]:
    """Words that are not flags or flag values (gcloud's flags here all take one value unless listed)."""
    bare = {"--quiet", "--all-versions", "--recursive", "--to-latest"}
    words, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a.startswith("--"):
            skip = "=" not in a and a not in bare
            continue
        words.append(a)
    return words


def record(tool: str, argv: list[str]) -> None:
    with (_state() / "calls.jsonl").open("a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": argv, "cwd": os.getcwd()}) + "\n")


def _add_image(st: Path, image: str) -> None:
    with (st / "images").open("a") as fh:
        fh.write(image + "\n")


def gcloud(argv: list[str], st: Path) -> int:
    words = _positional(argv)
    if words[:3] == ["config", "get-value", "project"]:
        print(_read(st / "gcloud_project").strip())
        return 0
    if words[:4] == ["artifacts", "docker", "images", "describe"]:
        image = words[4]
        if image in _read(st / "images").split():
            print("sha256:0123")
            return 0
        print(f"ERROR: (gcloud.artifacts.docker.images.describe) NOT_FOUND: {image}", file=sys.stderr)
        return 1
    if words[:2] == ["builds", "submit"]:
        fails = st / "build_fails"
        if fails.exists():
            spec = json.loads(fails.read_text())
            if spec["times"] > 0:
                spec["times"] -= 1
                fails.write_text(json.dumps(spec))
                print(spec["message"], file=sys.stderr)
                return 1
        subs = dict(kv.split("=", 1) for kv in (_flag(argv, "--substitutions") or "").split(",") if "=" in kv)
        _add_image(st, subs["_IMAGE"])
        return 0
    if words[:2] == ["builds", "describe"]:
        print(_read(st / "build_info"))
        return 0
    if words[:3] == ["run", "services", "describe"]:
        name = words[3]
        fmt = _flag(argv, "--format") or ""
        if fmt == "json":
            print(_read(st / f"service.{name}.json", "{}"))
        else:
            print(_read(st / f"latest_revision.{name}", f"{name}-00002-new").strip())
        return 0
    if words[:3] == ["run", "services", "update"]:
        if (st / f"update_fails.{words[3]}").exists():
            print(f"ERROR: (gcloud.run.services.update) Revision '{words[3]}-00009-bad' is not ready "
                  "and cannot serve traffic. The user-provided container failed the configured startup probe "
                  "checks.", file=sys.stderr)
            return 1
        return 0
    if words[:3] == ["run", "jobs", "describe"]:
        default = "europe-west1-docker.pkg.dev/acme-scoring/scorer/scorer:0ld"
        print(_read(st / f"job_image.{words[3]}", default).strip())
        return 0
    if words[:3] == ["run", "jobs", "update"]:
        if (st / f"update_fails.{words[3]}").exists():
            print(f"ERROR: (gcloud.run.jobs.update) PERMISSION_DENIED: Permission 'run.jobs.update' denied on "
                  f"resource 'namespaces/acme-scoring/jobs/{words[3]}'", file=sys.stderr)
            return 1
        image = _flag(argv, "--image")
        if image:
            (st / f"job_image.{words[3]}").write_text(image + "\n")
        return 0
    if words[:3] == ["run", "revisions", "list"]:
        print(_read(st / f"revisions.{_flag(argv, '--service')}.json", "[]"))
        return 0
    if words[:2] == ["storage", "ls"]:
        bucket = next(w for w in words[2:] if w.startswith("gs://"))[5:].strip("/")
        listing = st / "buckets" / bucket
        if not listing.exists():
            print(f"ERROR: (gcloud.storage.ls) gs://{bucket} not found: 404.", file=sys.stderr)
            return 1
        print(listing.read_text(), end="")
        return 0
    return 0


def docker(argv: list[str], st: Path) -> int:
    if argv and argv[0] == "push":
        _add_image(st, argv[1])
    return 0


def sleep(argv: list[str], st: Path) -> int:
    return 0


def main(tool: str, argv: list[str]) -> int:
    record(tool, argv)
    return {"gcloud": gcloud, "docker": docker, "sleep": sleep}[tool](argv, _state())
