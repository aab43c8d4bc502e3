"""Stand-ins for terraform, gcloud and docker in the script tests.

Each call is appended to $STUB_STATE/calls.jsonl as {"tool", "argv", "cwd"},
and answered from files in $STUB_STATE that the test writes:

  outputs.json          what `terraform output -json` prints (else "{}")
  outputs.apply.json    copied to outputs.json by `terraform apply` (a targeted
                        apply only copies TARGETED_OUTPUTS; a fresh project has
                        outputs only after the first apply)
  gcloud_project        what `gcloud config get-value project` prints
  images                one image reference a line: the ones that exist in
                        Artifact Registry (`builds submit` / `docker push` add theirs)
  build_fails           if present, `gcloud builds submit` fails
  service.json          `gcloud run services describe --format=json`
  latest_revision       `gcloud run services describe --format=value(...)`
  revisions.json        `gcloud run revisions list --format=json`
  buckets/<name>        `gcloud storage ls gs://<name>` prints this (absent: no bucket)
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


TARGETED_OUTPUTS = {"project_id", "region", "image_uri", "build_service_account", "build_bucket"}


def terraform(argv: list[str], st: Path) -> int:
    args = [a for a in argv if not a.startswith("-chdir=")]
    cmd = args[0] if args else ""
    if cmd == "output":
        if (st / "output_fails").exists():
            print("Error: Backend initialization required", file=sys.stderr)
            return 1
        print(_read(st / "outputs.json", "{}"))
        return 0
    if cmd == "apply":
        if (st / "outputs.apply.json").exists():
            after = json.loads((st / "outputs.apply.json").read_text())
            if any(a.startswith("-target") for a in args):
                # Terraform updates only the outputs derived from targeted
                # resources alone: these, for setup.sh's targets
                before = json.loads(_read(st / "outputs.json", "{}"))
                after = {**before, **{k: v for k, v in after.items() if k in TARGETED_OUTPUTS}}
            (st / "outputs.json").write_text(json.dumps(after))
        print("Apply complete!")
        return 0
    if cmd == "destroy":
        (st / "outputs.json").unlink(missing_ok=True)
        print("Destroy complete!")
        return 0
    return 0


def _add_image(st: Path, image: str) -> None:
    with (st / "images").open("a") as fh:
        fh.write(image + "\n")


def gcloud(argv: list[str], st: Path) -> int:
    words = [a for a in argv if not a.startswith("-")]
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
        if (st / "build_fails").exists():
            print("ERROR: (gcloud.builds.submit) build failed", file=sys.stderr)
            return 1
        subs = dict(kv.split("=", 1) for kv in (_flag(argv, "--substitutions") or "").split(",") if "=" in kv)
        _add_image(st, subs["_IMAGE"])
        return 0
    if words[:3] == ["run", "services", "describe"]:
        fmt = _flag(argv, "--format") or ""
        if fmt == "json":
            print(_read(st / "service.json", "{}"))
        else:
            print(_read(st / "latest_revision", "scorer-00002-new").strip())
        return 0
    if words[:3] == ["run", "revisions", "list"]:
        print(_read(st / "revisions.json", "[]"))
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


def main(tool: str, argv: list[str]) -> int:
    st = _state()
    with (st / "calls.jsonl").open("a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": argv, "cwd": os.getcwd()}) + "\n")
    return {"terraform": terraform, "gcloud": gcloud, "docker": docker}[tool](argv, st)
