"""The documentation as the code and the operators use it: every pointer to a
section of a Markdown page (`docs/OPERATIONS.md, "Remote state"`) from the
scripts, the Terraform and the workflow leads to a heading that exists, and no
page ships a placeholder nobody filled in (`<MEASURED_BYTES_PER_SECOND>`)."""

from __future__ import annotations

import re
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
