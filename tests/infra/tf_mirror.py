"""A mirror of terraform/ that the real `terraform` binary can init, plan,
apply, output and destroy on this machine, with no provider plugin.

Every resource and data source of terraform/ becomes a built-in
`terraform_data` resource whose address maps 1:1 (see `mirror_address`):

    google_pubsub_subscription.push      -> terraform_data.google_pubsub_subscription__push
    data.google_project.this             -> terraform_data.data__google_project__this

keeping what decides Terraform's own behaviour:

  - the dependency graph: the mirror resource's `input` holds every top-level
    argument of the real one (translated) and every reference its nested
    blocks make, and its `depends_on` the real `depends_on`, so
    `apply -target` pulls in the same dependencies and orders the same way;
  - count and for_each (the same expressions), and lifecycle preconditions;
  - the attributes others read: `input` carries each attribute that the
    configuration reads from the resource (`google_x.y.email` becomes
    `terraform_data.google_x__y.output.email`), from the real argument when
    the resource sets it, else from a plausible computed value (COMPUTED);
  - variables (copied as they are, validations included), locals and outputs
    (copied with references translated), moved blocks.

Providers, backends and required_providers are left out: that is all a plugin
would decide (API calls, computed values), which no test here can know.

`faults` adds a local-exec provisioner to chosen resources that fails like the
Google API would (tests/infra/stubs/fault.py): the real terraform then exits
and reports the way it does when a provider call fails.

The text is read line by line: terraform/ is `terraform fmt`-ed (infra-checks
checks that), so a top-level block is a header at column 0 up to the next
line that is exactly "}", and a top-level argument is a line at two spaces'
indent. A construct this reader does not know is an error, never skipped.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HEADER = re.compile(r'^(resource|data|variable|output|locals|provider|terraform|moved|check|module|import)\b(.*)\{\s*$')
LABELS = re.compile(r'"([^"]+)"')
ATTR = re.compile(r"^  ([A-Za-z_][\w-]*)\s*=\s*(.*)$")
NESTED = re.compile(r'^  ([A-Za-z_][\w-]*)(\s+"[^"]*")*\s*\{\s*$')
REF = re.compile(
    r"(?<![\w.])(data\.)?((?:google|time)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)((?:\[[^\]]*\])?)((?:\.[A-Za-z_]\w*)?)"
)
LOCAL_REF = re.compile(r"(?<![\w.])local\.[A-Za-z_][\w-]*")
META_ARGS = {"count", "for_each", "depends_on", "provider"}

# Values the provider computes, for the attributes the configuration reads.
# Each gets the resource's own arguments (translated HCL expressions) and
# returns an HCL expression.
PROJECT_NUMBER = "123456789012"


def _s(expr: str) -> str:
    return "${" + expr + "}"


def _account_email(a: dict) -> str:
    return f'{_s(a["account_id"])}@${{var.project_id}}.iam.gserviceaccount.com'


def _project_path(collection: str, a: dict) -> str:
    return f'"projects/${{var.project_id}}/{collection}/{_s(a["name"])}"'


def _pool(a: dict) -> str:
    return f'projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{_s(a["workload_identity_pool_id"])}'


PUBSUB_AGENT = f"service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"

COMPUTED = {
    ("google_service_account", "email"): lambda a: f'"{_account_email(a)}"',
    ("google_service_account", "member"): lambda a: f'"serviceAccount:{_account_email(a)}"',
    ("google_service_account", "name"): lambda a: f'"projects/${{var.project_id}}/serviceAccounts/{_account_email(a)}"',
    ("google_cloud_run_v2_service", "uri"): lambda a: f'"https://{_s(a["name"])}-abcdefghij-ew.a.run.app"',
    ("google_pubsub_topic", "id"): lambda a: _project_path("topics", a),
    ("google_pubsub_subscription", "id"): lambda a: _project_path("subscriptions", a),
    ("google_artifact_registry_repository", "project"): lambda a: "var.project_id",
    ("google_artifact_registry_repository", "name"): lambda a: a["repository_id"],
    ("google_monitoring_slo", "name"): lambda a: f'"projects/{PROJECT_NUMBER}/services/{_s(a["service"])}/serviceLevelObjectives/{_s(a["slo_id"])}"',
    ("google_monitoring_dashboard", "id"): lambda a: f'"projects/{PROJECT_NUMBER}/dashboards/0a1b2c3d-4e5f"',
    ("google_iam_workload_identity_pool", "name"): lambda a: f'"{_pool(a)}"',
    ("google_iam_workload_identity_pool_provider", "name"): lambda a: f'"{_pool(a)}/providers/{_s(a["workload_identity_pool_provider_id"])}"',
    ("google_project_service_identity", "email"): lambda a: f'"{PUBSUB_AGENT}"',
    ("google_project_service_identity", "member"): lambda a: f'"serviceAccount:{PUBSUB_AGENT}"',
    ("google_storage_project_service_account", "email_address"): lambda a: f'"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"',
    ("google_project", "number"): lambda a: f'"{PROJECT_NUMBER}"',
}


class MirrorError(Exception):
    pass


def mirror_name(is_data: bool, rtype: str, name: str) -> str:
    return f"{'data__' if is_data else ''}{rtype}__{name}"


def mirror_address(address: str) -> str:
    """google_x.y -> terraform_data.google_x__y; data.google_x.y -> terraform_data.data__google_x__y."""
    parts = address.split(".")
    if parts[0] == "data" and len(parts) == 3:
        return f"terraform_data.{mirror_name(True, parts[1], parts[2])}"
    if len(parts) == 2:
        return f"terraform_data.{mirror_name(False, parts[0], parts[1])}"
    raise MirrorError(f"not a resource address: {address}")


def real_address(address: str) -> str:
    """The inverse of mirror_address, for a mirror resource's address (with its
    instance key, if any): terraform_data.google_x__y["k"] -> google_x.y["k"]."""
    m = re.fullmatch(r"terraform_data\.([A-Za-z_][\w-]*?)((?:\[.*\])?)", address)
    if not m or "__" not in m.group(1):
        return address  # not a mirror of anything
    name, key = m.group(1), m.group(2)
    is_data = name.startswith("data__")
    rtype, _, rname = name.removeprefix("data__").partition("__")
    return f"{'data.' if is_data else ''}{rtype}.{rname}{key}"


@dataclass
class Block:
    kind: str
    labels: list[str]
    lines: list[str]  # the block's body lines (without header and closing brace)
    file: str
    attrs: dict[str, str] = field(default_factory=dict)  # top-level argument -> expression text
    nested: list[tuple[str, list[str]]] = field(default_factory=list)  # (block type, its lines incl. header)


def _balance(text: str) -> int:
    """Open brackets minus closed ones, outside strings (heredocs: see _split_body)."""
    depth, in_str, esc = 0, False, False
    i = 0
    while i < len(text):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            elif c == "$" and text[i + 1:i + 2] == "{":
                # an interpolation inside a string: skip to its end
                j, d = i + 2, 1
                while j < len(text) and d:
                    d += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                i = j
                continue
        elif c == '"':
            in_str = True
        elif c == "#":
            break
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return depth


def _split_body(block: Block) -> None:
    """Top-level arguments and nested blocks of a resource-like body."""
    lines = block.lines
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "//")):
            i += 1
            continue
        m = ATTR.match(line)
        if m:
            name, expr = m.group(1), m.group(2)
            heredoc = re.search(r"<<-?(\w+)\s*$", expr)
            if heredoc:
                tag = heredoc.group(1)
                body = [expr]
                i += 1
                while i < len(lines) and lines[i].strip() != tag:
                    body.append(lines[i])
                    i += 1
                body.append(lines[i])
                i += 1
                block.attrs[name] = "\n".join(body)
                continue
            depth = _balance(expr)
            body = [expr]
            i += 1
            while depth > 0:
                if i >= len(lines):
                    raise MirrorError(f"{block.file}: unbalanced expression for {name}")
                body.append(lines[i])
                depth += _balance(lines[i])
                i += 1
            block.attrs[name] = "\n".join(body)
            continue
        m = NESTED.match(line)
        if m:
            start = i
            i += 1
            while i < len(lines) and lines[i] != "  }":
                i += 1
            block.nested.append((m.group(1), lines[start:i + 1]))
            i += 1
            continue
        raise MirrorError(f"{block.file}: cannot read this line of {block.kind} {block.labels}: {line!r}")


def read_blocks(tf_dir: Path) -> list[Block]:
    blocks = []
    for f in sorted(tf_dir.glob("*.tf")):
        lines = f.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.strip() or line.startswith(("#", "//")):
                i += 1
                continue
            m = HEADER.match(line)
            if not m:
                raise MirrorError(f"{f.name}:{i + 1}: not a top-level block header: {line!r}")
            start = i
            i += 1
            while i < len(lines) and lines[i] != "}":
                i += 1
            if i >= len(lines):
                raise MirrorError(f"{f.name}:{start + 1}: block never closed (is the file terraform fmt-ed?)")
            blocks.append(Block(m.group(1), LABELS.findall(m.group(2)), lines[start + 1:i], f.name))
            i += 1
    return blocks


def _strip_comments(lines: list[str]) -> str:
    return "\n".join(line for line in lines if not line.strip().startswith(("#", "//")))


class Mirror:
    def __init__(self, tf_dir: Path, faults: set[str] | None = None, python: str | None = None):
        self.blocks = read_blocks(tf_dir)
        self.faults = set(faults or ())
        self.python = python or sys.executable
        self.declared: dict[tuple[bool, str, str], Block] = {}
        for b in self.blocks:
            if b.kind in ("resource", "data"):
                _split_body(b)
                self.declared[(b.kind == "data", b.labels[0], b.labels[1])] = b
            elif b.kind in ("check", "module", "import"):
                raise MirrorError(f"{b.file}: {b.kind} blocks are not mirrored yet: teach tests/infra/tf_mirror.py")
        unknown = self.faults - {f"{'data.' if d else ''}{t}.{n}" for d, t, n in self.declared}
        if unknown:
            raise MirrorError(f"faults for undeclared resources: {sorted(unknown)}")
        # the attributes read from each resource anywhere in the configuration
        self.read: dict[tuple[bool, str, str], set[str]] = {k: set() for k in self.declared}
        for b in self.blocks:
            for m in REF.finditer(_strip_comments(b.lines)):
                key = (bool(m.group(1)), m.group(2), m.group(3))
                if key in self.declared and m.group(5):
                    self.read[key].add(m.group(5)[1:])

    # -- expressions -----------------------------------------------------------------

    def translate(self, text: str) -> str:
        def sub(m: re.Match) -> str:
            is_data, rtype, name, index, attr = bool(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)
            if (is_data, rtype, name) not in self.declared:
                return m.group(0)  # not a reference (or an undeclared one: terraform says so)
            target = f"terraform_data.{mirror_name(is_data, rtype, name)}{index}"
            if not attr:
                return target
            attr = attr[1:]
            if attr == "id" and (rtype, "id") not in COMPUTED:
                return f"{target}.id"
            return f"{target}.output.{attr}"

        return REF.sub(sub, text)

    def _references(self, lines: list[str]) -> list[str]:
        """Every resource/data/local reference in some lines, translated, once each."""
        text = _strip_comments(lines)
        found = []
        for m in REF.finditer(text):
            if (bool(m.group(1)), m.group(2), m.group(3)) in self.declared:
                found.append(self.translate(m.group(0)))
        found += LOCAL_REF.findall(text)
        return list(dict.fromkeys(found))

    # -- blocks ------------------------------------------------------------------------

    def resource(self, b: Block) -> str:
        is_data, rtype, name = b.kind == "data", b.labels[0], b.labels[1]
        address = f"{'data.' if is_data else ''}{rtype}.{name}"
        out = [f'resource "terraform_data" "{mirror_name(is_data, rtype, name)}" {{',
               f"  # mirror of {address} ({b.file})"]
        for meta in ("count", "for_each"):
            if meta in b.attrs:
                out.append(f"  {meta} = {self.translate(b.attrs[meta])}")
        values = {k: self.translate(v) for k, v in b.attrs.items() if k not in META_ARGS}
        for attr in sorted(self.read[(is_data, rtype, name)]):
            if attr in values or (attr == "id" and (rtype, "id") not in COMPUTED):
                continue
            make = COMPUTED.get((rtype, attr))
            if make is None:
                raise MirrorError(f"terraform/ reads {address}.{attr}, which the mirror cannot make up: "
                                  f"add it to COMPUTED in tests/infra/tf_mirror.py")
            try:
                values[attr] = make(values)
            except KeyError as e:
                raise MirrorError(f"{address}.{attr} is made from the argument {e}, which {address} does not set")
        refs = []
        for _, lines in b.nested:
            refs += self._references(lines)
        out.append("  input = {")
        for k, v in values.items():
            out.append(f"    {k} = {v}")
        if refs:
            out.append("    _nested_refs = [")
            out += [f"      {r}," for r in dict.fromkeys(refs)]
            out.append("    ]")
        out.append("  }")
        if "depends_on" in b.attrs:
            out.append(f"  depends_on = {self.translate(b.attrs['depends_on'])}")
        for kind, lines in b.nested:
            if kind != "lifecycle":
                continue
            conditions = self._conditions(lines)
            if conditions:
                out.append("  lifecycle {")
                out += conditions
                out.append("  }")
        if address in self.faults:
            # the real terraform fails this resource's create (or destroy) the
            # way a provider error does, as often as the test asks
            for when, suffix in (("", "create"), ("destroy", "destroy")):
                out += ['  provisioner "local-exec" {']
                if when:
                    out.append("    when = destroy")
                # (an instance of a for_each resource also names its key, so
                # that a test can fail one instance: fault.py)
                key = "[${each.key}]" if "for_each" in b.attrs else ""
                out += [f"    interpreter = [{json.dumps(self.python)}, \"${{path.module}}/fault.py\"]",
                        f'    command     = "{address}{key}.{suffix}"',
                        "  }"]
        out.append("}")
        return "\n".join(out)

    def _conditions(self, lifecycle: list[str]) -> list[str]:
        """The precondition/postcondition blocks of a lifecycle block, translated."""
        out, i = [], 1
        while i < len(lifecycle) - 1:
            line = lifecycle[i]
            if re.match(r"^    (pre|post)condition\s*\{\s*$", line):
                j = i + 1
                while lifecycle[j] != "    }":
                    j += 1
                out += [self.translate(x) for x in lifecycle[i:j + 1]]
                i = j + 1
            else:
                i += 1
        return out

    def text(self) -> str:
        parts = ["# Generated by tests/infra/tf_mirror.py from terraform/: built-in terraform_data only."]
        for b in self.blocks:
            if b.kind in ("resource", "data"):
                parts.append(self.resource(b))
            elif b.kind in ("variable", "output", "locals", "moved"):
                header = b.kind + "".join(f' "{label}"' for label in b.labels) + " {"
                body = "\n".join(b.lines)
                if b.kind == "moved":
                    body = re.sub(r"(from|to)\s*=\s*(\S+)", lambda m: f"{m.group(1)} = {mirror_address(m.group(2))}", body)
                else:
                    body = self.translate(body)
                parts.append(f"{header}\n{body}\n}}")
            # provider, terraform: what a plugin and a registry would do
        return "\n\n".join(parts) + "\n"

    def addresses(self) -> list[str]:
        return sorted(f"{'data.' if d else ''}{t}.{n}" for d, t, n in self.declared)

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "main.tf").write_text(self.text())
        (out_dir / "addresses.json").write_text(json.dumps(self.addresses()))
        fault = Path(__file__).resolve().parent / "stubs" / "fault.py"
        (out_dir / "fault.py").write_text(fault.read_text())
        return out_dir


if __name__ == "__main__":
    # python tf_mirror.py TF_DIR OUT_DIR: write the mirror (to look at it)
    Mirror(Path(sys.argv[1])).write(Path(sys.argv[2]))
