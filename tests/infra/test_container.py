"""app/Dockerfile, .dockerignore, .gcloudignore and cloudbuild.yaml.

hadolint and checkov lint the Dockerfile in .ci/infra-checks.sh; no container
engine runs here, so the image itself is built by Cloud Build and by the GitHub
workflow. These tests pin down what the image must be, and
test_the_build_stage_sees_a_whole_workspace lays out exactly what the build
stage's COPY lines put in /src (after .gcloudignore and .dockerignore) and runs
the real `cargo metadata` there, which fails as `cargo build` would on a
workspace member that was not copied.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need_tool

DOCKERFILE = (ROOT / "app" / "Dockerfile").read_text()
# The workspace members, as the root Cargo.toml lists them (a new crate is
# needed by the image the moment it is listed there).
MEMBERS = tuple(tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"])
NEEDED = ("Cargo.toml", "Cargo.lock", "app/Dockerfile", "app/src/main.rs", "app/tests/e2e.rs", "app/benches/b.rs",
          "data/model.json", "data/scl_flights_2017.csv", "README.md",
          *(f"{m}/Cargo.toml" for m in MEMBERS), *(f"{m}/src/lib.rs" for m in MEMBERS))


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


def test_the_members_are_plain_directories():
    """The COPY check below copies directories; a glob member would need it taught."""
    assert MEMBERS and all(re.fullmatch(r"[a-z0-9_-]+", m) for m in MEMBERS), MEMBERS


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((word, rest))
    return stages


def _build_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY of the build stage that takes from the context."""
    copies = []
    for word, rest in _stages()[0]:
        if word not in ("COPY", "ADD"):
            continue
        assert word == "COPY", "the build stage uses COPY, not ADD"
        args = rest.split()
        if any(a.startswith("--from") for a in args):
            continue
        args = [a for a in args if not a.startswith("--")]
        assert len(args) >= 2 and not args[0].startswith("["), f"COPY {rest}: teach the test this form"
        assert not any(ch in a for a in args for ch in "*?["), f"COPY {rest}: teach the test globs"
        copies.append((args[:-1], args[-1]))
    return copies


def _workdir() -> str:
    dirs = [rest for word, rest in _stages()[0] if word == "WORKDIR"]
    assert dirs, "the build stage sets its WORKDIR"
    return dirs[-1]


def _context_files() -> list[str]:
    """What reaches the Docker build in Cloud Build: the files of a fresh clone
    (git ls-files) that `gcloud builds submit` uploads (.gcloudignore) and that
    docker then keeps in its build context (.dockerignore)."""
    need_tool("git", "apt-get install git")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True,
                           text=True).stdout.split("\0")
    gcloud, docker = _patterns(".gcloudignore"), _patterns(".dockerignore")
    return [f for f in files if f and (ROOT / f).is_file() and not _gitignore(gcloud, f)
            and not _dockerignore(docker, f)]


def lay_out_build_stage(into: Path, copies: list[tuple[list[str], str]] | None = None) -> Path:
    """The build stage's WORKDIR as its COPY lines fill it, under `into`."""
    workdir = _workdir()
    files = _context_files()
    placed = 0
    for sources, dest in (copies if copies is not None else _build_copies()):
        target = into / (dest.lstrip("/") if dest.startswith("/") else str(Path(workdir.lstrip("/")) / dest))
        for src in sources:
            src = src.rstrip("/") if src not in ("./", ".") else ""
            hits = [f for f in files if f == src or not src or f.startswith(src + "/")]
            assert hits, f"COPY {src}: nothing in the build context matches it"
            for f in hits:
                rel = Path(f).name if f == src else (f if not src else f[len(src) + 1:])
                to = target / rel if (f != src or dest.endswith("/") or len(sources) > 1) else target
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, to)
                placed += 1
    assert placed, "the build stage copies nothing"
    return into / workdir.lstrip("/")


def cargo_metadata(where: Path) -> subprocess.CompletedProcess:
    cargo = need_tool("cargo", "install Rust (rustup; the workspace's toolchain is in Cargo.toml's rust-version)")
    return subprocess.run([cargo, "metadata", "--no-deps", "--format-version", "1", "--offline"], cwd=where,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CARGO_TARGET_DIR": str(where / "target")})


def test_the_build_stage_sees_a_whole_workspace(tmp_path):
    """What `cargo build` in the image sees: the real cargo must load the
    workspace (every member of the root Cargo.toml) from exactly the files the
    build stage's COPY lines bring in, and every file the crates embed
    (include_bytes!/include_str!) must be among them."""
    src = lay_out_build_stage(tmp_path / "image")
    r = cargo_metadata(src)
    assert r.returncode == 0, f"cargo metadata fails on what app/Dockerfile copies:\n{r.stderr}"
    meta = json.loads(r.stdout)
    dirs = {Path(p["manifest_path"]).parent.relative_to(src).as_posix() for p in meta["packages"]}
    assert dirs == set(MEMBERS), f"the workspace in the image is {sorted(dirs)}, the root Cargo.toml says {MEMBERS}"
    assert "scorer" in {p["name"] for p in meta["packages"]}, "the image builds -p scorer"

    embedded = re.compile(r'include_(?:bytes|str)!\(\s*"([^"]+)"\s*\)')
    found = 0
    for rs in src.rglob("*.rs"):
        for rel in embedded.findall(rs.read_text(encoding="utf-8", errors="replace")):
            found += 1
            assert (rs.parent / rel).resolve().is_file(), \
                f"{rs.relative_to(src)} embeds {rel}, which the build stage does not copy"
    assert found, "the crates embed the model and the shipped data (include_bytes!)"


@pytest.mark.parametrize("member", MEMBERS)
def test_the_workspace_check_catches_a_member_left_out(tmp_path, member):
    """The check itself: without one member's COPY, cargo metadata fails (as the
    image build did with only app/ and data/ copied)."""
    copies = [(s, d) for s, d in _build_copies() if s != [f"{member}/"]]
    assert len(copies) == len(_build_copies()) - 1, f"app/Dockerfile copies {member}/ with its own COPY line"
    r = cargo_metadata(lay_out_build_stage(tmp_path / "image", copies))
    assert r.returncode != 0 and f"{member}/Cargo.toml" in r.stderr, r.stderr


def test_cloudbuild_builds_the_dockerfile_from_the_root_and_pushes_the_given_tag():
    cfg = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    (step,) = cfg["steps"]
    assert step["name"] == "gcr.io/cloud-builders/docker"
    assert step["args"][0] == "build" and step["args"][-1] == "."
    assert "--file=app/Dockerfile" in step["args"] and "--tag=${_IMAGE}" in step["args"]
    assert cfg["images"] == ["${_IMAGE}"]
    assert cfg["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert int(cfg["timeout"].rstrip("s")) >= 1800
