"""Terraform schema of the google provider, read from @cdktf/provider-google.

The npm package @cdktf/provider-google is generated from the provider's own
schema (16.12.1 <- google 6.50.0). For every resource and data source,
lib/<name>/index.js spells each argument and nested block the Terraform way in
its ``...ToHclTerraform`` functions (with ``isBlock``), and lib/<name>/index.d.ts
marks the required ones (a property without ``?``). This module turns that into
a plain dict, so that tests can check the .tf files the way ``terraform
validate`` would, without reaching a registry:

    {"attributes": {tf_name: required?}, "blocks": {tf_name: {"required": bool,
     "schema": <same shape>}}, "computed": [exported-only attribute names]}

("computed" only at the top level: what references like google_x.y.email may use.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_FN_START = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{$", re.M)
_TOP_START = re.compile(r"^    synthesizeHclAttributes\(\) \{$", re.M)
_ENTRY = re.compile(
    r"^ {8,12}\"?([A-Za-z0-9_]+)\"?: \{\n\s+value: (.*?),\n\s+isBlock: (true|false),",
    re.M,
)
_CAMEL = re.compile(r"(?:struct\.|this\._)(\w+)")
_NESTED_FN = re.compile(r"(?<!cdktf\.)\b(\w+)ToHclTerraform\b")
_TF_TYPE = re.compile(r'\.tfResourceType = "([\w-]+)";')
_IFACE = re.compile(r"^export interface (\w+)(?: extends [\w.]+)? \{\n(.*?)^\}", re.M | re.S)
_PROP = re.compile(r"^    readonly (\w+)(\??):", re.M)
_COMPUTED = re.compile(r"^ +// (\w+) - computed: true,", re.M)


class SchemaError(Exception):
    pass


def _sections(js: str):
    """Yield (function_name or None for the resource itself, body) pairs."""
    for m in list(_FN_START.finditer(js)) + list(_TOP_START.finditer(js)):
        # the attribute list ends before the function does ("\n}" for a
        # function, "\n    }" for the method); an empty one has no _END marker
        closing = "\n}" if m.re is _FN_START else "\n    }"
        end = js.find(closing, m.end())
        if end < 0:
            raise SchemaError(f"unterminated attribute list after offset {m.start()}")
        yield (m.group(1) if m.re is _FN_START else None), js[m.end():end]


def _interfaces(dts: str) -> dict[str, dict[str, bool]]:
    out = {}
    for m in _IFACE.finditer(dts):
        out[m.group(1)] = {p.group(1): p.group(2) != "?" for p in _PROP.finditer(m.group(2))}
    return out


def parse_lib_dir(lib_dir: Path) -> tuple[str, dict]:
    """Return (terraform type name, schema) for one lib/<name>/ directory."""
    # large resources keep their nested structs in index-structs/structs*.js
    js = "\n".join(p.read_text(encoding="utf-8") for p in sorted(lib_dir.rglob("*.js")))
    dts = "\n".join(p.read_text(encoding="utf-8") for p in sorted(lib_dir.rglob("*.d.ts")))
    m = _TF_TYPE.search(js)
    if not m:
        raise SchemaError(f"{lib_dir}: no tfResourceType")
    tf_type = m.group(1)
    ifaces = _interfaces(dts)
    raw: dict[str | None, list[tuple[str, str | None, bool, str | None]]] = {}
    for fn, body in _sections(js):
        entries = []
        for e in _ENTRY.finditer(body):
            name, value, is_block = e.group(1), e.group(2), e.group(3) == "true"
            camel = _CAMEL.search(value)
            nested = None
            if is_block:
                for cand in _NESTED_FN.findall(value):
                    nested = cand
            entries.append((name, camel.group(1) if camel else None, is_block, nested))
        if fn is None and None in raw:
            raise SchemaError(f"{lib_dir}: two resource attribute lists")
        raw[fn] = entries
    if None not in raw:
        raise SchemaError(f"{lib_dir}: no synthesizeHclAttributes")
    # the resource's own config interface: the one that extends TerraformMetaArguments
    top_iface = re.search(r"^export interface (\w+Config) extends cdktf\.TerraformMetaArguments", dts, re.M)
    if not top_iface and lib_dir.name == "provider":
        top_iface = re.search(r"^export interface (\w*ProviderConfig) \{", dts, re.M)
    if not top_iface:
        raise SchemaError(f"{lib_dir}: no config interface")

    def build(fn: str | None, iface: str, seen: tuple) -> dict:
        req = ifaces.get(iface, {})
        attrs, blocks = {}, {}
        for name, camel, is_block, nested in raw[fn]:
            required = bool(camel and req.get(camel, False))
            if is_block:
                if nested is None or nested not in raw:
                    raise SchemaError(f"{lib_dir}: block {name} has no nested schema ({nested})")
                sub = {} if nested in seen else build(nested, nested[0].upper() + nested[1:], seen + (nested,))
                blocks[name] = {"required": required, "schema": sub}
            else:
                attrs[name] = required
        return {"attributes": attrs, "blocks": blocks}

    schema = build(None, top_iface.group(1), ())
    # attributes the resource exports but does not take (email, uri, member,
    # ...): commented "// name - computed: true, ..." in its main class
    main = re.search(
        r"^class \w+ extends cdktf\.Terraform(?:Resource|DataSource|Provider) \{$(.*?)^exports\.",
        js, re.M | re.S)
    if not main:
        raise SchemaError(f"{lib_dir}: no main class")
    schema["computed"] = sorted(set(_COMPUTED.findall(main.group(1))) - set(schema["attributes"]))
    return tf_type, schema


def load_provider_schema(package_dir: Path, min_resources: int = 500) -> dict:
    """{"resources": {type: schema}, "data": {type: schema}, "provider": schema}.

    min_resources guards against a changed package layout (google and
    google-beta have over 500 resource types, time has 4)."""
    lib = package_dir / "lib"
    if not lib.is_dir():
        raise SchemaError(f"{package_dir} has no lib/: is @cdktf/provider-google installed there?")
    out = {"resources": {}, "data": {}, "provider": None}
    for d in sorted(p for p in lib.iterdir() if p.is_dir() and (p / "index.js").is_file()):
        tf_type, schema = parse_lib_dir(d)
        if d.name == "provider":
            out["provider"] = schema
        elif d.name.startswith("data-"):
            out["data"][tf_type] = schema
        else:
            out["resources"][tf_type] = schema
    if len(out["resources"]) < min_resources or out["provider"] is None:
        raise SchemaError(f"only {len(out['resources'])} resources read from {lib}: the layout changed?")
    return out


def cached_provider_schema(package_dir: Path, cache_file: Path, min_resources: int = 500) -> dict:
    """The schema, cached as JSON next to the package (rebuilt when missing or stale)."""
    stamp = str((package_dir / "package.json").stat().st_mtime_ns)
    if cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text())
            if data.get("stamp") == stamp:
                return data["schema"]
        except (ValueError, KeyError):
            pass
    schema = load_provider_schema(package_dir, min_resources)
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "schema": schema}))
    tmp.replace(cache_file)
    return schema
