"""The documentation as the code and the operators use it: every pointer to a
section of a Markdown page (`docs/OPERATIONS.md, "Remote state"`) from the
scripts, the Terraform and the workflow leads to a heading that exists, and no
page ships a placeholder nobody filled in (`<MEASURED_BYTES_PER_SECOND>`), and
every documented `docker run` of the image passes it a `scorer` subcommand (the
image's ENTRYPOINT is the binary) the way an operator can actually run it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

FENCE = re.compile(r"^\s*(```|~~~)")


def headings(page: Path) -> list[str]:
    """The headings of a Markdown page (outside code blocks), backticks dropped."""
    out, in_code = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:
            out.append(m.group(1).replace("`", "").strip())
    return out


def resolves(page: str, section: str) -> bool:
    """A section is named by its heading, or by the heading's words before a colon
    ("Size admission" for "Size admission: long files")."""
    path = ROOT / page
    if not path.is_file():
        return False
    return any(h == section or h.startswith(section + ":") for h in headings(path))


# Where the code points operators at the docs.
POINTING = ("setup.sh", "deploy.sh", "destroy.sh", "test.sh", "scripts/*.sh", "terraform/*", ".github/workflows/*.yml",
            ".ci/*", "bench/*.sh", "bench/lib/*.sh", "fuzz/run.sh", "app/Dockerfile", "cloudbuild.yaml",
            ".dockerignore", ".gcloudignore")
# `README.md, "Remote state"` (quotes may be escaped inside a shell string), or
# unquoted up to a closing parenthesis: `(see README.md, Remote state)`.
MD = r"((?:[\w.-]+/)*[\w.-]+\.md)"
QUOTED = re.compile(MD + r',\s+\\?"([^"\\]+)\\?"')
BARE = re.compile(MD + r",\s+([A-Z][^\"()\n]*?)\)")


def references(text: str) -> list[tuple[str, str]]:
    return [(page, section) for page, section, _ in located_references(text)]


def located_references(text: str) -> list[tuple[str, str, int]]:
    """(page, section, line number)."""
    found = [(m.group(1), m.group(2), m.start()) for m in QUOTED.finditer(text)]
    found += [(m.group(1), m.group(2).strip(), m.start()) for m in BARE.finditer(text)]
    return [(page, section, text[:at].count("\n") + 1) for page, section, at in found]


def pointing_files() -> list[Path]:
    files = {f for pattern in POINTING for f in ROOT.glob(pattern) if f.is_file()}
    return sorted(files)


def test_the_reference_reader_itself():
    assert references('die "see docs/OPERATIONS.md, \\"Remote state\\")"') == [("docs/OPERATIONS.md", "Remote state")]
    assert references('# (README.md, "Remote state").') == [("README.md", "Remote state")]
    assert references("(see README.md, Continuous deployment)") == [("README.md", "Continuous deployment")]
    assert resolves("docs/OPERATIONS.md", "Remote state") and resolves("docs/DEPLOY.md", "Size admission")
    assert not resolves("README.md", "Remote state"), "moved to docs/OPERATIONS.md"
    assert not resolves("docs/NOPE.md", "Remote state")


def test_every_pointer_to_a_doc_section_resolves():
    checked, broken = 0, []
    for f in pointing_files():
        text = f.read_text(encoding="utf-8", errors="replace")
        for page, section, line in located_references(text):
            checked += 1
            if not resolves(page, section):
                broken.append(f"{f.relative_to(ROOT)}:{line}: {page}, \"{section}\"")
    assert checked >= 5, f"only {checked} pointers found: is the reader still right?"
    assert not broken, "pointers to sections that do not exist (moved or renamed?):\n" + "\n".join(broken)


# --- unfilled placeholders -----------------------------------------------------------

# The pages: README.md, docs/*.md and every other Markdown file of the repository.
PAGES = sorted({ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.md"), *ROOT.glob("data/*.md")})
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]+)>")
# A name saying it still has to be filled in is flagged wherever it stands,
# code blocks included (a formula with an unmeasured number is as unfinished in
# a code block as in a sentence).
UNFILLED = re.compile(r"MEASURED|TODO|TBD|FIXME|XXX|FILL|PLACEHOLDER|UNKNOWN")
# Any other <NAME> is a legitimate placeholder inside code (`gcloud ... <PROJECT>`,
# a code block); in prose it must be listed here, with what it stands for.
PROSE_PLACEHOLDERS: dict[str, str] = {}


def placeholders(text: str) -> list[tuple[int, str, bool]]:
    """(line number, name, whether it stands in code: a fenced block or `inline code`)."""
    out, in_block = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_block = not in_block
            continue
        code_spans = [(m.start(), m.end()) for m in re.finditer(r"`[^`]*`", line)]
        for m in PLACEHOLDER.finditer(line):
            in_code = in_block or any(a <= m.start() < b for a, b in code_spans)
            out.append((n, m.group(1), in_code))
    return out


def unfilled(text: str) -> list[str]:
    bad = []
    for n, name, in_code in placeholders(text):
        if UNFILLED.search(name):
            bad.append(f"{n}: <{name}> is still to be filled in")
        elif not in_code and name not in PROSE_PLACEHOLDERS:
            bad.append(f"{n}: <{name}> in prose (a placeholder left in? if it is meant, put it in `code` or list "
                       "it in PROSE_PLACEHOLDERS with what it stands for)")
    return bad


def test_the_placeholder_rule_itself():
    text = "\n".join([
        "Upload with `gsutil cp FILE gs://<INPUT_BUCKET>/`.",          # code: fine
        "```sh", "gcloud config set project <PROJECT_ID>", "```",      # code block: fine
        "The limit is <MEASURED_BYTES_PER_SECOND> x 300 s.",          # unfilled
        "```", "BYTES = <MEASURED_BYTES_PER_SECOND> x 300", "```",     # unfilled, even in code
        "`<TODO_NAME>` and <TBD>",                                   # unfilled
        "Set <SOMETHING> here.",                                     # prose: not listed
        "`<generation>` and <lower> are not this rule's business.",
    ])
    assert [line.split(":")[0] for line in unfilled(text)] == ["5", "7", "9", "9", "10"]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_no_page_ships_an_unfilled_placeholder(page):
    bad = unfilled(page.read_text(encoding="utf-8"))
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


# --- docker run IMAGE ARGS: ARGS are what the image's entrypoint, scorer, takes --------

# docker run's options that take a value (as the docs may use them), and those that do not
DOCKER_VALUE_OPTIONS = {"-e", "--env", "-v", "--volume", "-u", "--user", "-p", "--publish", "--name", "-w", "--workdir",
                        "--network", "--mount", "--env-file", "--platform", "--entrypoint"}
DOCKER_FLAGS = {"--rm", "-i", "-t", "-it", "-ti", "-d", "--detach", "--init", "--read-only", "--pull=always"}


def entrypoint() -> list[str]:
    """The ENTRYPOINT of the image (the last stage's, written in exec form)."""
    lines = [line.strip() for line in (ROOT / "app" / "Dockerfile").read_text().splitlines()]
    found = [line.split(None, 1)[1] for line in lines if line.startswith("ENTRYPOINT ")]
    assert found, "app/Dockerfile has no ENTRYPOINT"
    return json.loads(found[-1])


def source_subcommands() -> set[str]:
    """The subcommands of app/src/cli/mod.rs's `enum Command` (clap derive: the
    variant's name, kebab-cased, unless it is renamed)."""
    text = (ROOT / "app" / "src" / "cli" / "mod.rs").read_text()
    body = re.search(r"enum Command \{(.*?)\n\}", text, re.S)
    assert body, "app/src/cli/mod.rs has no enum Command: teach this test where the subcommands are"
    assert "name =" not in body.group(1), "a renamed subcommand: teach this test"
    names = re.findall(r"^    ([A-Z][A-Za-z]*)\b", body.group(1), re.M)
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", n).lower() for n in names}


def scorer_binary() -> Path | None:
    """A built scorer, when this machine has one (.ci/run builds it before these
    checks; the workflow's infra job has none): $SCORER_BIN, else the CI target
    directory."""
    cache = Path(os.environ.get("SCORER_CACHE_DIR", Path.home() / ".cache" / "scorer-ci"))
    for candidate in (os.environ.get("SCORER_BIN"),
                      os.environ.get("CARGO_TARGET_DIR") and Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "scorer",
                      cache / "target" / "release" / "scorer", ROOT / "target" / "release" / "scorer"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def commands(text: str) -> list[str]:
    """The `docker run` command lines of a page: in code blocks (continuation lines
    joined) and in `inline code`."""
    out, block, in_block = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            if in_block:
                joined = re.sub(r"\\\n\s*", " ", "\n".join(block))
                out += [c for c in joined.splitlines() if "docker run" in c]
                block = []
            in_block = not in_block
            continue
        if in_block:
            block.append(line)
        else:
            out += [m.group(1) for m in re.finditer(r"`([^`]*docker run[^`]*)`", line)]
    return [c[c.index("docker run"):] for c in out]


def docker_run(command: str) -> tuple[dict[str, list[str]], str, list[str]]:
    """(options, IMAGE, ARGS) of `docker run [OPTIONS] IMAGE [ARGS...]`."""
    words = shlex.split(command.split(" #")[0])
    assert words[:2] == ["docker", "run"], command
    options: dict[str, list[str]] = {}
    i = 2
    while i < len(words) and words[i].startswith("-"):
        word = words[i]
        name, eq, value = word.partition("=")
        if name in DOCKER_VALUE_OPTIONS:
            if not eq:
                i += 1
                value = words[i]
            options.setdefault(name, []).append(value)
        else:
            assert word in DOCKER_FLAGS, f"{command}: docker run option {word} unknown to this test: teach it"
            options.setdefault(word, [])
        i += 1
    assert i < len(words), f"{command}: no image"
    return options, words[i], [w for w in words[i + 1:] if w != "..."]


def documented_runs() -> list[tuple[str, str]]:
    return [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in commands(page.read_text())]


def test_the_docker_run_reader_itself():
    opts, image, args = docker_run('docker run --rm --user "$(id -u)" -e A=1 -v "x:/y:ro" "$(terraform output -raw '
                                   'image_uri):TAG" reconcile --input-bucket "$IN"')
    assert image == "$(terraform output -raw image_uri):TAG" and args == ["reconcile", "--input-bucket", "$IN"]
    assert opts["--user"] == ["$(id -u)"] and opts["-v"] == ["x:/y:ro"]
    assert commands("e.g. `docker run --rm IMAGE:TAG scorer reconcile ...`.") == ["docker run --rm IMAGE:TAG scorer "
                                                                                 "reconcile ..."]
    assert docker_run("docker run --rm IMAGE:TAG scorer reconcile ...")[2][0] == "scorer", "the old README line"
    assert source_subcommands() >= {"score", "serve", "reconcile", "redrive", "openapi"}


def test_every_documented_docker_run_passes_a_scorer_subcommand():
    """The image's ENTRYPOINT is the scorer binary, so `docker run IMAGE scorer
    reconcile` ran `scorer scorer reconcile`: what follows the image must be a
    subcommand (checked against the source, and against a built binary's
    help, flags included, when this machine has one); a mounted credential
    file (0600 on the host) needs --user so that the container can read it;
    an Artifact Registry image needs docker to be allowed to pull it
    (gcloud auth configure-docker) on the same page."""
    assert entrypoint() == ["/app/scorer"]
    runs = documented_runs()
    assert runs, "no docker run is documented: is the reader still right?"
    known = source_subcommands()
    binary = scorer_binary()
    if binary:
        listed = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
        built = set(re.findall(r"^  ([a-z][a-z-]*)\s", listed[listed.index("Commands:"):], re.M)) - {"help"}
        assert built == known, f"the source's subcommands {sorted(known)} are not the binary's {sorted(built)}"
    bad = []
    for page, command in runs:
        options, image, args = docker_run(command)
        if "--entrypoint" in options:
            continue
        if args and args[0] not in known:
            bad.append(f"{page}: `{command}`: {args[0]!r} is not a scorer subcommand ({', '.join(sorted(known))})")
        elif args and binary:
            sub = subprocess.run([binary, "help", args[0]], capture_output=True, text=True, timeout=30).stdout
            for flag in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
                if not re.search(rf"(^|\s){re.escape(flag)}([\s=,]|$)", sub, re.M):
                    bad.append(f"{page}: `{command}`: scorer {args[0]} has no {flag}")
        mounts = " ".join(options.get("-v", []) + options.get("--volume", []) + options.get("--mount", []))
        if ("credentials" in mounts or "GOOGLE_APPLICATION_CREDENTIALS" in " ".join(options.get("-e", [])))\
                and not (options.get("--user") or options.get("-u")):
            bad.append(f"{page}: `{command}`: mounts a credential file (mode 0600) without --user: the image's user "
                       "65532 cannot read it")
        if "image_uri" in image or "docker.pkg.dev" in image or image.startswith("IMAGE"):
            text = (ROOT / page).read_text()
            if "gcloud auth configure-docker" not in text:
                bad.append(f"{page}: `{command}` pulls from Artifact Registry, but the page never says "
                           "`gcloud auth configure-docker REGION-docker.pkg.dev`")
    assert not bad, "\n".join(bad)


# --- docs/DEVELOPMENT.md's map of the code ------------------------------------------------

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def layout() -> list[str]:
    text = (ROOT / "docs" / "DEVELOPMENT.md").read_text()
    block = re.search(r"## Layout\s*```text\n(.*?)\n```", text, re.S)
    assert block, "docs/DEVELOPMENT.md has no Layout code block"
    return block.group(1).splitlines()


def test_the_development_layout_names_what_exists():
    """Each crate of the root Cargo.toml is in the map, the crate count is
    right, and every path the map names (crate-relative under a crate) exists."""
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    lines = layout()
    count = re.search(r"the workspace: (\w+) crates", "\n".join(lines))
    assert count and NUMBERS.get(count.group(1)) == len(members), \
        f"the layout says {count.group(0) if count else 'no crate count'}, the workspace has {len(members)}"
    tops = {m.group(1) for line in lines if (m := re.match(r"^([\w.-]+)/\s", line))}
    assert set(members) <= tops, f"crates missing from the layout: {sorted(set(members) - tops)}"
    missing, crate, named = [], None, 0
    for line in lines:
        top = re.match(r"^([\w.-]+/)\s", line)
        if top:
            crate = top.group(1)
            missing += [] if (ROOT / crate).is_dir() else [crate]
            continue
        entry = re.match(r"^\s{2,4}((?:src|tests|benches)/[\w./-]*)\s", line)
        if entry and crate:
            named += 1
            if not (ROOT / crate / entry.group(1)).exists():
                missing.append(crate + entry.group(1))
    assert named >= 10, "the layout reader found too few entries: is it still right?"
    assert not missing, f"docs/DEVELOPMENT.md's layout names what does not exist: {missing}"
