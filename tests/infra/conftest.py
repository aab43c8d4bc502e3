"""Shared fixtures of the infrastructure tests (run by .ci/infra-checks.sh).

Tools these tests need are installed by .ci/infra-checks.sh; a test that lacks
one fails and says what to install: nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "terraform"
META = {"__start_line__", "__end_line__"}


def strip_meta(node):
    if isinstance(node, dict):
        return {k: strip_meta(v) for k, v in node.items() if k not in META}
    if isinstance(node, list):
        return [strip_meta(v) for v in node]
    return node


class TfConfig:
    """All terraform/*.tf files, parsed with python-hcl2, indexed by kind."""

    def __init__(self, tf_dir: Path):
        self.dir = tf_dir
        self.files = sorted(tf_dir.glob("*.tf"))
        self.text = {f.name: f.read_text(encoding="utf-8") for f in self.files}
        self.resources: dict[str, dict[str, dict]] = {}
        self.data: dict[str, dict[str, dict]] = {}
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: dict[str, object] = {}
        self.terraform: list[dict] = []
        self.providers: dict[str, dict] = {}
        self.moved: list[dict] = []
        for f in self.files:
            with f.open(encoding="utf-8") as fh:
                doc = strip_meta(hcl2.load(fh, with_meta=True))
            for kind, table in (("resource", self.resources), ("data", self.data)):
                for entry in doc.get(kind, []):
                    for rtype, named in entry.items():
                        for name, body in named.items():
                            assert name not in table.setdefault(rtype, {}), f"{rtype}.{name} declared twice"
                            body["__file__"] = f.name
                            table[rtype][name] = body
            for entry in doc.get("variable", []):
                self.variables.update(entry)
            for entry in doc.get("output", []):
                self.outputs.update(entry)
            for entry in doc.get("locals", []):
                self.locals.update(entry)
            self.terraform.extend(doc.get("terraform", []))
            for entry in doc.get("provider", []):
                self.providers.update(entry)
            self.moved.extend(doc.get("moved", []))

    def resource(self, rtype: str, name: str) -> dict:
        assert rtype in self.resources and name in self.resources[rtype], f"terraform/ declares no {rtype}.{name}"
        return self.resources[rtype][name]

    def all_resources(self):
        for rtype, named in self.resources.items():
            for name, body in named.items():
                yield rtype, name, body

    def default(self, var: str):
        assert var in self.variables, f"no variable {var}"
        return self.variables[var].get("default")


@pytest.fixture(scope="session")
def tf() -> TfConfig:
    return TfConfig(TF_DIR)


def block(body: dict, name: str) -> dict:
    """The single nested block `name` of a body (python-hcl2 gives a list)."""
    value = body.get(name)
    assert isinstance(value, list) and len(value) == 1, f"expected one {name} block, got {value!r}"
    return value[0]


def need_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: {install_hint}", pytrace=False)
    return path


def need_env_path(var: str, what: str) -> Path:
    value = os.environ.get(var, "")
    if not value or not Path(value).exists():
        pytest.fail(f"{var} does not point at {what}: run these tests through .ci/infra-checks.sh, "
                    f"which installs it and sets {var}", pytrace=False)
    return Path(value)


# --- the script tests' mirror of terraform/ (script_harness.py) ------------------------


@pytest.fixture(scope="session")
def mirror_template(tmp_path_factory) -> Path:
    """terraform/ mirrored (tf_mirror.py) and initialised by the real terraform; no state."""
    from script_harness import write_mirror

    return write_mirror(tmp_path_factory.mktemp("mirror") / "tf")


@pytest.fixture(scope="session")
def deployed_template(tmp_path_factory, mirror_template) -> Path:
    """The mirror after a full apply (as setup.sh leaves it), by the real terraform."""
    from script_harness import PROJECT, terraform

    out = tmp_path_factory.mktemp("deployed") / "tf"
    shutil.copytree(mirror_template, out, symlinks=True)
    terraform(out, "apply", "-input=false", "-auto-approve", f"-var=project_id={PROJECT}", "-var=image_tag=0ld")
    return out
