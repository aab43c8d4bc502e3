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

The schemas come from the npm packages @cdktf/provider-google and
@cdktf/provider-google-beta (16.12.1, generated from hashicorp/google and
google-beta 6.50.0, the version versions.tf pins) and @cdktf/provider-time
(11.0.1, from hashicorp/time 0.13.1); see tf_schema.py. A resource belongs to
the provider its `provider =` names, else to the one its type's prefix names
(google_..., time_...); every provider used must be in required_providers as
hashicorp/<name>, and a type the google provider lacks but google-beta has is
reported with that hint.

usage: check_terraform_schema.py --provider-package DIR [--provider NAME=DIR ...]
                                 [--cache FILE] [TF_DIR]
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
    r"(?<![\w.\"'])(data\.)?((?:google|time)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?(?:\.([A-Za-z_]\w*))?"
)
# the provider's minimum number of resource types (a changed package layout
# yields far fewer)
MIN_RESOURCES = {"google": 500, "google-beta": 500, "time": 3}
_VAR = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
_LOCAL = re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")


def is_block_list(value) -> bool:
    """python-hcl2 (with_meta) gives blocks as lists of dicts carrying line numbers."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "__start_line__" in v for v in value)


def line_of(body) -> str:
    return str(body.get("__start_line__", "?")) if isinstance(body, dict) else "?"


def provider_of(rtype: str, body: dict) -> str:
    """The provider (local name) of a resource: its `provider =`, else its type's prefix."""
    explicit = body.get("provider")
    if explicit:
        return re.sub(r"^\$\{|\}$", "", str(explicit)).split(".")[0]
    return rtype.split("_", 1)[0]


class Checker:
    def __init__(self, schemas: dict):
        # {provider local name: schema}; "google" is required
        self.schemas = schemas
        self.schema = schemas["google"]
        self.errors: list[str] = []
        self.declared: dict[tuple[str, str], set] = {}  # (kind, type) -> names
        self.provider_of: dict[tuple[str, str, str], str] = {}  # (kind, type, name) -> provider
        self.required_providers: dict[str, str] = {}  # local name -> source
        self.used_providers: set[str] = set()
        self.variables: set[str] = set()
        self.locals: set[str] = set()
        self.repeated: set[tuple[str, str]] = set()  # (type, name) of resources with count or for_each
        self.moved_from: set[str] = set()  # every moved block's `from`
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
                        for name, body in named.items():
                            if name in META:
                                continue
                            self.declared.setdefault((kind, rtype), set()).add(name)
                            self.provider_of[(kind, rtype, name)] = provider_of(rtype, body)
                            if kind == "resource" and ("count" in body or "for_each" in body):
                                self.repeated.add((rtype, name))
            for tf in doc.get("terraform", []):
                for rp in tf.get("required_providers", []):
                    for pname, spec in rp.items():
                        if pname not in META and isinstance(spec, dict):
                            self.required_providers[pname] = spec.get("source", "")
            for entry in doc.get("variable", []):
                self.variables.update(k for k in entry if k not in META)
            for entry in doc.get("locals", []):
                self.locals.update(k for k in entry if k not in META)
            for mv in doc.get("moved", []):
                self.moved_from.add(re.sub(r"^\$\{|\}$", "", str(mv.get("from", ""))))
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
                            pname = provider_of(rtype, body)
                            self.used_providers.add(pname)
                            if pname not in self.schemas:
                                self.err(where, f"provider \"{pname}\" is not known to the schema check "
                                                f"(known: {', '.join(sorted(self.schemas))})")
                                continue
                            sch = self.schemas[pname][table].get(rtype)
                            if sch is None:
                                hint = ""
                                beta = self.schemas.get("google-beta")
                                if pname == "google" and beta and rtype in beta[table]:
                                    hint = ": it exists only in google-beta (set provider = google-beta)"
                                self.err(where, f"the {pname} provider has no {kind} type \"{rtype}\"{hint}")
                                continue
                            self.counts[table if kind == "resource" else "data"] += 1
                            self.counts["types"].add(rtype)
                            self.check_body(body, sch, where, True)
                            self.check_lifecycle(body, sch, where)
            for entry in doc.get("provider", []):
                for pname, body in entry.items():
                    if pname in META:
                        continue
                    self.used_providers.add(pname)
                    if pname in self.schemas:
                        self.check_body(body, self.schemas[pname]["provider"],
                                        f"{rel}:{line_of(body)} provider.{pname}", True)
                    else:
                        self.err(rel, f"unexpected provider \"{pname}\"")
            self.check_refs(doc, rel)
        for pname in sorted(self.used_providers):
            source = self.required_providers.get(pname)
            if source is None:
                self.err(str(tf_dir), f"provider \"{pname}\" is used but not in terraform.required_providers")
            elif source != f"hashicorp/{pname}":
                self.err(str(tf_dir), f"required_providers.{pname}.source is \"{source}\", not \"hashicorp/{pname}\"")

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
        # a moved block's `from` names an address that no longer exists; its
        # `to` must be declared (an instance key only on a resource with count
        # or for_each), or be the `from` of a later move (a chain)
        for mv in doc.get("moved", []):
            to = re.sub(r"^\$\{|\}$", "", str(mv.get("to", "")))
            if to in self.moved_from:
                continue
            m = re.fullmatch(r"([a-z0-9_]+)\.([A-Za-z_][\w-]*)(\[[^\]]+\])?", to)
            if not m or m.group(2) not in self.declared.get(("resource", m.group(1)), set()):
                self.err(rel, f"moved block points at undeclared {to}")
            elif m.group(3) and (m.group(1), m.group(2)) not in self.repeated:
                self.err(rel, f"moved block points at an instance {m.group(3)} of {m.group(1)}.{m.group(2)}, "
                              f"which has neither count nor for_each")
        doc = {k: v for k, v in doc.items() if k != "moved"}
        for s in self.strings(doc):
            for m in _REF.finditer(s):
                is_data, rtype, name, attr = m.group(1), m.group(2), m.group(3), m.group(4)
                kind, table = ("data", "data") if is_data else ("resource", "resources")
                label = f"{'data.' if is_data else ''}{rtype}.{name}"
                if name not in self.declared.get((kind, rtype), set()):
                    self.err(rel, f"reference to undeclared {label}")
                    continue
                pname = self.provider_of.get((kind, rtype, name), "google")
                sch = self.schemas.get(pname, {}).get(table, {}).get(rtype)
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
    ap.add_argument("--provider", action="append", default=[], metavar="NAME=DIR",
                    help="another provider's package, e.g. google-beta=node_modules/@cdktf/provider-google-beta")
    ap.add_argument("--cache", type=Path, help="JSON cache of the extracted google schema "
                    "(the others are cached beside it as <name>-provider-schema.json)")
    ap.add_argument("tf_dir", nargs="?", type=Path, default=Path(__file__).resolve().parents[2] / "terraform")
    args = ap.parse_args(argv)

    packages = {"google": args.provider_package}
    for spec in args.provider:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            ap.error(f"--provider takes NAME=DIR, not {spec!r}")
        packages[name] = Path(directory)
    schemas = {}
    try:
        for name, package in packages.items():
            minimum = MIN_RESOURCES.get(name, 1)
            if args.cache:
                cache = args.cache if name == "google" else args.cache.with_name(f"{name}-provider-schema.json")
                schemas[name] = tf_schema.cached_provider_schema(package, cache, minimum)
            else:
                schemas[name] = tf_schema.load_provider_schema(package, minimum)
    except (OSError, tf_schema.SchemaError) as e:
        print(f"schema check: cannot read the provider schema: {e}", file=sys.stderr)
        return 2
    schema = schemas["google"]

    checker = Checker(schemas)
    checker.check(args.tf_dir)
    if checker.errors:
        print(f"schema check: {len(checker.errors)} problem(s) in {args.tf_dir}:", file=sys.stderr)
        for e in checker.errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print(f"schema check: {checker.counts['resources']} resources and {checker.counts['data']} data sources "
          f"({len(checker.counts['types'])} types) match the google provider schema "
          f"({len(schema['resources'])} resource types known; providers checked: {', '.join(sorted(schemas))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
