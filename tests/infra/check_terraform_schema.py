#!/usr/bin/env python3
"""Check terraform/*.tf against the google provider's schema: what `terraform
validate` would catch, without a registry.

Every resource and data source type must exist in the provider; every argument
and nested block (recursively, dynamic blocks included) must be one the
provider knows, written as an argument or as a block the way the schema says;
every required argument and block must be there. References
(google_x.name.attr, data.google_x.name.attr, var.x, local.x) must point at
something declared, with an attribute the type really exports, and
lifecycle.ignore_changes must name real attributes.

The schema comes from the npm package @cdktf/provider-google (16.12.1 is
generated from hashicorp/google 6.50.0, the version versions.tf pins); see
tf_schema.py.

usage: check_terraform_schema.py --provider-package DIR [--cache FILE] [TF_DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import hcl2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tf_schema  # noqa: E402

META = {"__start_line__", "__end_line__"}
RESOURCE_META_ARGS = {"count", "for_each", "depends_on", "provider", "lifecycle", "connection", "provisioner"}
TERRAFORM_KEYWORDS = {"each", "count", "self", "path", "terraform"}

_REF = re.compile(
    r"(?<![\w.\"'])(data\.)?(google_[a-z0-9_]+)\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?(?:\.([A-Za-z_]\w*))?"
)
_VAR = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
_LOCAL = re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")


def is_block_list(value) -> bool:
    """python-hcl2 (with_meta) gives blocks as lists of dicts carrying line numbers."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "__start_line__" in v for v in value)


def line_of(body) -> str:
    return str(body.get("__start_line__", "?")) if isinstance(body, dict) else "?"


class Checker:
    def __init__(self, schema: dict):
        self.schema = schema
        self.errors: list[str] = []
        self.declared: dict[tuple[str, str], set] = {}  # (kind, type) -> names
        self.variables: set[str] = set()
        self.locals: set[str] = set()
        self.counts = {"resources": 0, "data": 0, "types": set()}

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    # -- bodies ----------------------------------------------------------------

    def check_body(self, body: dict, sch: dict, where: str, top: bool) -> None:
        present: set[str] = set()
        for key, value in body.items():
            if key in META:
                continue
            if top and key in RESOURCE_META_ARGS:
                continue
            if key == "dynamic":
                for item in value:
                    for name, dyn in item.items():
                        if name in META:
                            continue
                        if name not in sch["blocks"]:
                            self.err(f"{where}:{line_of(dyn)}", f"dynamic block \"{name}\" is not a block of this type"
                                     f"{self.hint(name, sch)}")
                            continue
                        present.add(name)
                        if "for_each" not in dyn:
                            self.err(f"{where}:{line_of(dyn)}", f"dynamic \"{name}\" has no for_each")
                        contents = dyn.get("content")
                        if not is_block_list(contents):
                            self.err(f"{where}:{line_of(dyn)}", f"dynamic \"{name}\" has no content block")
                            continue
                        for c in contents:
                            self.check_body(c, sch["blocks"][name]["schema"], f"{where} > {name}", False)
                continue
            if key in sch["blocks"]:
                present.add(key)
                if not is_block_list(value):
                    self.err(f"{where}", f"\"{key}\" is a block: write `{key} {{ ... }}`, not `{key} = ...`")
                    continue
                for b in value:
                    self.check_body(b, sch["blocks"][key]["schema"], f"{where} > {key}", False)
            elif key in sch["attributes"]:
                present.add(key)
                if is_block_list(value):
                    self.err(f"{where}:{line_of(value[0])}", f"\"{key}\" is an argument: write `{key} = ...`, not a block")
            else:
                self.err(f"{where}", f"unknown argument or block \"{key}\"{self.hint(key, sch)}")
        for name, required in sch["attributes"].items():
            if required and name not in present:
                self.err(where, f"required argument \"{name}\" is missing")
        for name, blk in sch["blocks"].items():
            if blk["required"] and name not in present:
                self.err(where, f"required block \"{name}\" is missing")

    @staticmethod
    def hint(name: str, sch: dict) -> str:
        import difflib

        close = difflib.get_close_matches(name, list(sch["attributes"]) + list(sch["blocks"]), n=1)
        return f" (did you mean \"{close[0]}\"?)" if close else ""

    # -- files -------------------------------------------------------------------

    def load(self, tf_dir: Path) -> list[tuple[Path, dict]]:
        docs = []
        files = sorted(tf_dir.glob("*.tf"))
        if not files:
            self.err(str(tf_dir), "no .tf files")
        for f in files:
            with f.open(encoding="utf-8") as fh:
                try:
                    docs.append((f, hcl2.load(fh, with_meta=True)))
                except Exception as e:  # lark errors carry the position
                    self.err(str(f), f"does not parse: {e}")
        for f, doc in docs:
            for kind in ("resource", "data"):
                for entry in doc.get(kind, []):
                    for rtype, named in entry.items():
                        for name in named:
                            self.declared.setdefault((kind, rtype), set()).add(name)
            for entry in doc.get("variable", []):
                self.variables.update(k for k in entry if k not in META)
            for entry in doc.get("locals", []):
                self.locals.update(k for k in entry if k not in META)
        return docs

    def check(self, tf_dir: Path) -> None:
        docs = self.load(tf_dir)
        for f, doc in docs:
            rel = f.name
            for kind, table in (("resource", "resources"), ("data", "data")):
                for entry in doc.get(kind, []):
                    for rtype, named in entry.items():
                        for name, body in named.items():
                            where = f"{rel}:{line_of(body)} {'data.' if kind == 'data' else ''}{rtype}.{name}"
                            sch = self.schema[table].get(rtype)
                            if sch is None:
                                self.err(where, f"the google provider has no {kind} type \"{rtype}\"")
                                continue
                            self.counts[table if kind == "resource" else "data"] += 1
                            self.counts["types"].add(rtype)
                            self.check_body(body, sch, where, True)
                            self.check_lifecycle(body, sch, where)
            for entry in doc.get("provider", []):
                for pname, body in entry.items():
                    if pname == "google":
                        self.check_body(body, self.schema["provider"], f"{rel}:{line_of(body)} provider.google", True)
                    else:
                        self.err(rel, f"unexpected provider \"{pname}\"")
            self.check_refs(doc, rel)

    def check_lifecycle(self, body: dict, sch: dict, where: str) -> None:
        for lc in body.get("lifecycle", []):
            for path in lc.get("ignore_changes", []):
                first = re.sub(r"^\$\{|\}$", "", str(path)).split(".")[0].split("[")[0]
                if first not in sch["attributes"] and first not in sch["blocks"] and first != "all":
                    self.err(where, f"lifecycle.ignore_changes names \"{first}\", which this type does not have")

    def strings(self, node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for k, v in node.items():
                if k not in META:
                    yield from self.strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from self.strings(v)

    def check_refs(self, doc: dict, rel: str) -> None:
        for s in self.strings(doc):
            for m in _REF.finditer(s):
                is_data, rtype, name, attr = m.group(1), m.group(2), m.group(3), m.group(4)
                kind, table = ("data", "data") if is_data else ("resource", "resources")
                label = f"{'data.' if is_data else ''}{rtype}.{name}"
                if name not in self.declared.get((kind, rtype), set()):
                    self.err(rel, f"reference to undeclared {label}")
                    continue
                sch = self.schema[table].get(rtype)
                if sch is None or attr is None:
                    continue
                known = set(sch["attributes"]) | set(sch["blocks"]) | set(sch.get("computed", [])) | {"id"}
                if attr not in known:
                    self.err(rel, f"{label} has no attribute \"{attr}\"")
            for m in _VAR.finditer(s):
                if m.group(1) not in self.variables:
                    self.err(rel, f"reference to undeclared variable var.{m.group(1)}")
            for m in _LOCAL.finditer(s):
                if m.group(1) not in self.locals:
                    self.err(rel, f"reference to undeclared local.{m.group(1)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider-package", required=True, type=Path,
                    help="node_modules/@cdktf/provider-google directory")
    ap.add_argument("--cache", type=Path, help="JSON cache of the extracted schema")
    ap.add_argument("tf_dir", nargs="?", type=Path, default=Path(__file__).resolve().parents[2] / "terraform")
    args = ap.parse_args(argv)

    try:
        if args.cache:
            schema = tf_schema.cached_provider_schema(args.provider_package, args.cache)
        else:
            schema = tf_schema.load_provider_schema(args.provider_package)
    except (OSError, tf_schema.SchemaError) as e:
        print(f"schema check: cannot read the provider schema: {e}", file=sys.stderr)
        return 2

    checker = Checker(schema)
    checker.check(args.tf_dir)
    if checker.errors:
        print(f"schema check: {len(checker.errors)} problem(s) in {args.tf_dir}:", file=sys.stderr)
        for e in checker.errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print(f"schema check: {checker.counts['resources']} resources and {checker.counts['data']} data sources "
          f"({len(checker.counts['types'])} types) match the google provider schema "
          f"({len(schema['resources'])} resource types known)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
