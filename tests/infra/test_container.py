"""app/Dockerfile, .dockerignore, .gcloudignore and cloudbuild.yaml.

hadolint and checkov lint the Dockerfile in .ci/infra-checks.sh; no container
engine runs here, so the image itself is built by Cloud Build and by the GitHub
workflow. These tests pin down what the image must be.
"""

from __future__ import annotations

import fnmatch
import re

import yaml

from conftest import ROOT

DOCKERFILE = (ROOT / "app" / "Dockerfile").read_text()
NEEDED = ("Cargo.toml", "Cargo.lock", "app/Dockerfile", "app/src/main.rs", "app/Cargo.toml",
          "app/tests/e2e.rs", "app/benches/b.rs", "data/model.json", "data/scl_flights_2017.csv", "README.md")


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_multi_stage_build_with_the_locked_toolchain():
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) == 2
    assert froms[0] == "rust:1.95-bookworm AS build"
    assert froms[1].startswith("gcr.io/distroless/cc-debian12:nonroot")
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "cargo build --release --locked -p scorer" in runs


def test_runtime_runs_scorer_serve_as_a_non_root_user():
    ins = instructions()
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["/app/scorer"]') in final
    assert ("CMD", '["serve"]') in final
    assert ("COPY", "data/model.json /app/model.json") in final
    assert ("EXPOSE", "8080") in final
    # PORT is read by the binary at run time (Cloud Run sets it): never baked into the command
    assert not any("8080" in rest for word, rest in final if word in ("CMD", "ENTRYPOINT"))


def _dockerignore(patterns: list[str], path: str) -> bool:
    """Docker: patterns are anchored at the context root; ** spans directories."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.split("/")[-1], pat[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if hit:
            result = not neg
    return result


def _gitignore(patterns: list[str], path: str) -> bool:
    """gitignore (.gcloudignore): a pattern with no inner slash matches at any
    depth, a leading slash anchors it, a trailing slash matches directories."""
    parts = path.split("/")
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!")
        dir_only = pat.endswith("/")
        pat = pat.rstrip("/")
        anchored = "/" in pat
        pat = pat.lstrip("/")
        hit = False
        for i in range(len(parts)):
            if dir_only and i == len(parts) - 1 and "." in parts[i]:
                continue  # a file, not a directory (good enough for these paths)
            if anchored:
                hit = fnmatch.fnmatch("/".join(parts[: i + 1]), pat)
            else:
                hit = fnmatch.fnmatch(parts[i], pat)
            if hit:
                break
        if hit:
            result = not neg
    return result


def _patterns(name: str) -> list[str]:
    return [line.strip() for line in (ROOT / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_build_context_keeps_what_the_image_needs_and_drops_the_rest():
    for name, ignored in ((".dockerignore", _dockerignore), (".gcloudignore", _gitignore)):
        pats = _patterns(name)
        for path in NEEDED:
            assert not ignored(pats, path), f"{name} drops {path}"
        for path in (".git/config", "target/release/scorer", "app/target/x", "terraform/main.tf",
                     "terraform/terraform.tfstate", "tests/infra/test_scripts.py", ".scorer-tmp/x"):
            assert ignored(pats, path), f"{name} keeps {path}"


def test_cloudbuild_builds_the_dockerfile_from_the_root_and_pushes_the_given_tag():
    cfg = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    (step,) = cfg["steps"]
    assert step["name"] == "gcr.io/cloud-builders/docker"
    assert step["args"][0] == "build" and step["args"][-1] == "."
    assert "--file=app/Dockerfile" in step["args"] and "--tag=${_IMAGE}" in step["args"]
    assert cfg["images"] == ["${_IMAGE}"]
    assert cfg["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert int(cfg["timeout"].rstrip("s")) >= 1800
