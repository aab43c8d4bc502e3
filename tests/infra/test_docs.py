"""The documentation as the code and the operators use it: every pointer to a
section of a Markdown page (`docs/OPERATIONS.md, "Remote state"`) from the
scripts, the Terraform and the workflow leads to a heading that exists."""

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
