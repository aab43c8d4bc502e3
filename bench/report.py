#!/usr/bin/env python3
"""Machine facts and the report of a bench/compare.sh run.

    report.py meta --out RUN/meta.json --scorer BIN --model MODEL --command CMD [--set k=v ...]
    report.py render RUN_DIR --md docs/BENCHMARKS.md --png bench/out/benchmarks.png
                     [--copy-png docs/benchmarks.png]

render reads RUN_DIR/{meta.json,batch.jsonl,verify.jsonl,online.jsonl,startup.jsonl}
(any part may be missing), writes RUN_DIR/results.json and RUN_DIR/batch.csv,
the Markdown report with absolute figures, ratios and the issue-10 targets, and
the plot (throughput and peak memory against file size, log x).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

TOOLS = [
    ("ours", "ours (`scorer score`)"),
    ("pandas_sklearn", "pandas + scikit-learn"),
    ("polars_py", "Python polars (lazy, sink_csv)"),
    ("floor", "floor: polars read + rewrite, no model"),
    ("count", "parse only: polars row count"),
]
TOOL_NAME = dict(TOOLS)
SERVERS = [
    ("ours", "ours (`scorer serve`)"),
    ("flask_gunicorn", "Flask + gunicorn (2 workers)"),
    ("fastapi_uvicorn", "FastAPI + uvicorn (2 workers)"),
]
SERVER_NAME = dict(SERVERS)


# ---------------------------------------------------------------- meta
def sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict:
    cpu = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    osname = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": osname,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(scorer: str) -> dict:
    v = {"python": platform.python_version()}
    for pkg in ("numpy", "pandas", "scikit-learn", "polars", "flask", "gunicorn", "fastapi", "uvicorn"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    wrk = sh("sh", "-c", "wrk --version 2>&1 | head -n1")
    v["wrk"] = wrk.split(" [")[0] if wrk else None
    v["scorer"] = sh(scorer, "--version") or None
    return v


def cmd_meta(a: argparse.Namespace) -> int:
    settings = dict(kv.split("=", 1) for kv in a.set or [])
    rev = sh("git", "rev-parse", "--short", "HEAD")
    dirty = sh("git", "status", "--porcelain", "--untracked-files=no")
    model = Path(a.model)
    meta = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": a.command,
        "git": (rev + ("+uncommitted" if dirty else "")) if rev else "no commit",
        "machine": machine(),
        "versions": versions(a.scorer),
        "model": {"path": str(model), "sha256": hashlib.sha256(model.read_bytes()).hexdigest()[:12]},
        "settings": settings,
    }
    Path(a.out).write_text(json.dumps(meta, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------- render
def read_jsonl(p: Path) -> list[dict]:
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


def fmt_int(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def fmt_rows(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def fmt_x(x) -> str:
    if x is None:
        return "–"
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def ok_mark(b) -> str:
    return "not measured" if b is None else ("**met**" if b else "**missed**")


class Results:
    def __init__(self, run: Path):
        self.run = run
        self.meta = json.loads((run / "meta.json").read_text()) if (run / "meta.json").exists() else {}
        self.batch = read_jsonl(run / "batch.jsonl")
        self.verify = read_jsonl(run / "verify.jsonl")
        self.online = read_jsonl(run / "online.jsonl")
        self.startup = read_jsonl(run / "startup.jsonl")
        self.sizes = sorted({b["rows"] for b in self.batch})

    def b(self, tool: str, rows: int) -> dict | None:
        for x in self.batch:
            if x["tool"] == tool and x["rows"] == rows and x["status"] == "ok" and x["seconds"]:
                return x
        return None

    def secs(self, tool: str, rows: int) -> float | None:
        x = self.b(tool, rows)
        return float(x["seconds"]) if x else None

    def peak_mib(self, tool: str, rows: int) -> float | None:
        x = self.b(tool, rows)
        return x["peak_kb"] / 1024 if x and x["peak_kb"] is not None else None

    def speedup(self, tool: str, rows: int) -> float | None:
        """How many times faster ours is than TOOL (wall time ratio)."""
        o, t = self.secs("ours", rows), self.secs(tool, rows)
        return t / o if o and t else None

    def o(self, target: str, script: str) -> dict | None:
        for x in self.online:
            if x.get("target") == target and x.get("script") == script:
                return x
        return None

    def st(self, target: str) -> dict | None:
        for x in self.startup:
            if x.get("target") == target:
                return x
        return None

    def checks(self, rows: int) -> str:
        parts = []
        for v in self.verify:
            if v.get("size") != rows:
                continue
            if v.get("what") == "rows":
                if v.get("ours_rows") is not None:
                    rej = v["input_rows"] - v["ours_rows"]
                    parts.append(f"ours wrote {v['ours_rows']:,} of {v['input_rows']:,} rows"
                                 + (f" ({rej:,} rejected by the model's vocabulary)" if rej else ""))
                continue
            name = Path(v["file"]).name.rsplit("_", 1)[0]
            if v.get("ok"):
                parts.append(f"{TOOL_NAME.get(name, name).split(' (')[0]} agrees "
                             f"({v['rows']:,} rows; first {v['checked']:,}: same predictions, "
                             f"max |Δp| {v['max_probability_diff']:.1e})")
            else:
                parts.append(f"{name} DISAGREES: {'; '.join(v.get('problems', []))}")
        return "; ".join(parts) or "not checked"

    # --- targets of issue 10
    def targets(self) -> list[tuple[str, str, bool | None]]:
        t = []
        at = [n for n in self.sizes if n >= 1_000_000] or self.sizes

        def every(tool, label, good):
            """GOOD(speed-up of ours over TOOL) at every size of 1M rows or more."""
            vals = [(n, self.speedup(tool, n)) for n in at]
            vals = [(n, v) for n, v in vals if v is not None]
            if not vals:
                return (label, "not measured", None)
            detail = ", ".join(f"{fmt_rows(n)}: {fmt_x(v)}" for n, v in vals)
            return (label, detail, all(good(v) for _, v in vals))

        t.append(every("pandas_sklearn", "Batch: ≥10x the throughput of pandas + scikit-learn", lambda v: v >= 10))
        t.append(every("polars_py", "Batch: faster than Python polars", lambda v: v > 1))
        o, f = self.secs("ours", 1_000_000), self.secs("floor", 1_000_000)
        t.append((
            "Batch: within 1.5x of the floor (read + rewrite) at 1M rows",
            f"ours {o:.2f} s ÷ floor {f:.2f} s = {o / f:.2f}x" if o and f else "not measured",
            (o / f <= 1.5) if o and f else None,
        ))
        p1, p10 = self.peak_mib("ours", 1_000_000), self.peak_mib("ours", 10_000_000)
        t.append((
            "Memory: 10M-row peak within 1.2x of the 1M-row peak (ours)",
            f"{p10:,.0f} MiB vs {p1:,.0f} MiB = {p10 / p1:.2f}x" if p1 and p10 else "not measured",
            (p10 / p1 <= 1.2) if p1 and p10 else None,
        ))
        ours, flask = self.o("ours", "predict"), self.o("flask_gunicorn", "predict")
        t.append((
            "Online: ≥20x the requests/s of Flask + gunicorn (POST /predict)",
            f"{ours['rps']:,.0f} vs {flask['rps']:,.0f} req/s = {ours['rps'] / flask['rps']:.1f}x"
            if ours and flask and flask["rps"] else "not measured",
            (ours["rps"] / flask["rps"] >= 20) if ours and flask and flask["rps"] else None,
        ))
        conns = self.meta.get("settings", {}).get("connections", "64")
        t.append((
            f"Online: p99 < 5 ms at {conns} connections (ours, POST /predict)",
            f"p99 {ours['p99_ms']:.2f} ms" if ours else "not measured",
            (ours["p99_ms"] < 5.0) if ours else None,
        ))
        mine = [x for x in self.online if x.get("target") == "ours"]
        if mine:
            bad = sum(x["non_2xx"] for x in mine)
            sock = sum(x.get("socket_errors", 0) for x in mine)
            t.append((
                "Online: zero non-2xx responses (ours, all load tests)",
                f"{bad} non-2xx, {sock} socket errors in {sum(x['requests'] for x in mine):,} requests",
                bad == 0 and sock == 0,
            ))
        else:
            t.append(("Online: zero non-2xx responses (ours, all load tests)", "not measured", None))
        s = self.st("ours")
        t.append((
            "Start to ready < 100 ms (ours, shipped model, median)",
            f"median {s['median_ms']:.1f} ms of {len(s['runs_ms'])} runs" if s else "not measured",
            (s["median_ms"] < 100) if s else None,
        ))
        return t


def plot(r: Results, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ours": ("C3", "o", 2.5), "pandas_sklearn": ("C0", "s", 1.5),
              "polars_py": ("C2", "^", 1.5), "floor": ("0.4", "D", 1.2), "count": ("0.65", "v", 1.0)}
    for tool, label in TOOLS:
        xs = [n for n in r.sizes if r.secs(tool, n)]
        if not xs:
            continue
        color, marker, lw = styles[tool]
        ax1.plot(xs, [n / r.secs(tool, n) for n in xs], marker=marker, color=color, lw=lw, label=label.replace("`", ""))
        mem = [r.peak_mib(tool, n) for n in xs]
        ax2.plot(xs, mem, marker=marker, color=color, lw=lw, label=label.replace("`", ""))
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("rows in the file (raw 18-column SCL layout)")
        ax.grid(True, which="both", alpha=0.3)
        if r.sizes:
            ax.set_xticks(r.sizes, [fmt_rows(n) for n in r.sizes])
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def si(v, _pos=None):
        return f"{v / 1e6:g}M" if v >= 1e6 else (f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}")

    ax1.set_yscale("log")
    ax1.yaxis.set_major_formatter(FuncFormatter(si))
    ax1.yaxis.set_minor_formatter(NullFormatter())
    ax1.set_ylabel("throughput, rows/s (log)")
    ax1.set_title("Batch throughput (higher is better)")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
    ax2.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}" if str(int(v))[0] in "25" else ""))
    ax2.set_ylabel("peak RSS, MiB (log)")
    ax2.set_title("Peak memory (lower is better)")
    ax1.legend(fontsize=8)
    m = r.meta.get("machine", {})
    fig.suptitle(f"{m.get('cpu', '')}, {m.get('cores', '?')} cores — {r.meta.get('date_utc', '')}", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def markdown(r: Results, png_rel: str | None) -> str:
    m, v, s = r.meta.get("machine", {}), r.meta.get("versions", {}), r.meta.get("settings", {})
    L = []
    w = L.append
    w("# Benchmarks")
    w("")
    w("Generated by `bench/compare.sh` (see [bench/README.md](../bench/README.md)); do not edit by hand,")
    w("re-run the script. Every figure below comes from one run, on one machine, side by side.")
    w("")
    w("## Run")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| date | {r.meta.get('date_utc', '?')} |")
    w(f"| command | `{r.meta.get('command', '?')}` |")
    w(f"| code | {r.meta.get('git', '?')} |")
    w(f"| machine | {m.get('cpu', '?')}; {m.get('cores', '?')} cores; {m.get('mem_gib', '?')} GiB RAM |")
    w(f"| system | {m.get('os', '?')}, kernel {m.get('kernel', '?')} |")
    la = m.get("load_avg_at_start")
    if la:
        busy = " (busy: other work was running, figures are pessimistic)" if la[0] > 0.5 else ""
        w(f"| load average at start | {' / '.join(str(x) for x in la)}{busy} |")
    w(f"| model | `{r.meta.get('model', {}).get('path', '?')}` (sha256 {r.meta.get('model', {}).get('sha256', '?')}) |")
    w(f"| scorer | {v.get('scorer') or '?'} |")
    py = ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "pandas", "scikit-learn", "polars",
                                           "flask", "gunicorn", "fastapi", "uvicorn") if v.get(k))
    w(f"| Python side | {py} |")
    w(f"| load generator | {v.get('wrk') or '?'} |")
    w("")

    w("## Batch: scoring a file")
    w("")
    w("Input: raw 18-column SCL files from `bench/gen_scl.py` (seed "
      f"{s.get('seed', '?')}; airline, flight type and month drawn from the real 2017 frequencies). "
      "Wall time and peak RSS from GNU `time -f '%e %M'`: files up to 1M rows are scored by every tool "
      "BATCH_RUNS times (default 3) and the table gives the median wall time and the largest peak; "
      "larger files run once. Throughput = input rows / wall time, "
      "start-up included (Python's interpreter and imports count: that is what a job pays). "
      "Every tool ran on both cores, with the file in the page cache. "
      "\"this ÷ ours\": above 1, ours is faster (time) or smaller (memory); "
      "for the floor and the parse-only count, which do no modelling, it shows how close ours gets to them.")
    w("")
    for n in r.sizes:
        size_mb = next((b["bytes"] for b in r.batch if b["rows"] == n), 0) / 1e6
        w(f"### {fmt_rows(n)} rows ({size_mb:,.0f} MB)")
        w("")
        w("| tool | wall s | rows/s | peak MiB | this ÷ ours (time) | this ÷ ours (peak memory) |")
        w("|---|---:|---:|---:|---:|---:|")
        for tool, label in TOOLS:
            rec = next((b for b in r.batch if b["tool"] == tool and b["rows"] == n), None)
            if rec is None:
                continue
            if rec["status"] != "ok":
                w(f"| {label} | failed | | | | |")
                continue
            sec = float(rec["seconds"])
            mib = rec["peak_kb"] / 1024
            if tool == "ours":
                w(f"| **{label}** | **{sec:.2f}** | **{fmt_int(n / sec if sec else None)}** | **{mib:,.0f}** | | |")
            else:
                om = r.peak_mib("ours", n)
                w(f"| {label} | {sec:.2f} | {fmt_int(n / sec if sec else None)} | {mib:,.0f} | "
                  f"{fmt_x(r.speedup(tool, n))} | {fmt_x(mib / om) if om else '–'} |")
        w("")
        w(f"Output check: {r.checks(n)}.")
        w("")

    w("## Online: POST /predict and GET /health")
    w("")
    w(f"Each server pinned to core {s.get('server_cpu', '0')} (`taskset`), the load generator to core "
      f"{s.get('wrk_cpu', '1')}: `wrk -t1 -c{s.get('connections', '64')} -d{s.get('duration', '10s')}` "
      "with `bench/wrk/health.lua` and `bench/wrk/predict.lua` (1 to 5 valid flights per request, "
      "real airline mix). Non-2xx counts every response whose status is not 2xx.")
    w("")
    w("| server | endpoint | requests/s | p50 ms | p99 ms | non-2xx | socket errors | ours ÷ this (req/s) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for target, label in SERVERS:
        for script, ep in (("predict", "POST /predict"), ("health", "GET /health")):
            x = r.o(target, script)
            if not x:
                continue
            mine = r.o("ours", script)
            ratio = fmt_x(mine["rps"] / x["rps"]) if mine and x["rps"] and target != "ours" else ""
            bold = "**" if target == "ours" else ""
            w(f"| {bold}{label}{bold} | {ep} | {bold}{x['rps']:,.0f}{bold} | {x['p50_ms']:.2f} | "
              f"{x['p99_ms']:.2f} | {x['non_2xx']} | {x.get('socket_errors', 0)} | {ratio} |")
    if not r.online:
        w("| (not measured) | | | | | | | |")
    w("")

    w("## Start-up: process start to GET /ready = 200")
    w("")
    w("| server | median ms | runs ms |")
    w("|---|---:|---|")
    for target, label in SERVERS:
        x = r.st(target)
        if x:
            w(f"| {label} | {x['median_ms']:.1f} | {', '.join(f'{t:.1f}' for t in x['runs_ms'])} |")
    if not r.startup:
        w("| (not measured) | | |")
    w("")

    w("## Targets (issue 10)")
    w("")
    w("| target | measured | |")
    w("|---|---|---|")
    for label, detail, met in r.targets():
        w(f"| {label} | {detail} | {ok_mark(met)} |")
    w("")
    if png_rel:
        w("## Plot")
        w("")
        w(f"![batch throughput and peak memory against file size]({png_rel})")
        w("")
    w("## Raw results")
    w("")
    w(f"`{r.run}` on the machine that ran it: `results.json` (everything), `batch.csv`, "
      "each tool's log and GNU time output, the wrk logs and the servers' logs.")
    w("")
    return "\n".join(L)


def cmd_render(a: argparse.Namespace) -> int:
    run = Path(a.run)
    r = Results(run)
    (run / "results.json").write_text(json.dumps({
        "meta": r.meta, "batch": r.batch, "verify": r.verify, "online": r.online, "startup": r.startup,
        "targets": [{"target": t, "measured": d, "met": m} for t, d, m in r.targets()],
    }, indent=2) + "\n")
    with open(run / "batch.csv", "w", newline="") as f:
        cw = csv.writer(f)
        cw.writerow(["tool", "rows", "bytes", "seconds", "rows_per_s", "peak_mib", "status"])
        for b in r.batch:
            sec = float(b["seconds"]) if b["seconds"] else None
            cw.writerow([b["tool"], b["rows"], b["bytes"], sec, round(b["rows"] / sec) if sec else "",
                         round(b["peak_kb"] / 1024, 1) if b["peak_kb"] is not None else "", b["status"]])
    png_rel = None
    if a.png and r.batch:
        png = Path(a.png)
        plot(r, png)
        shutil.copy(png, run / png.name)
        if a.copy_png:
            Path(a.copy_png).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, a.copy_png)
            png_rel = os.path.relpath(a.copy_png, Path(a.md).parent)
        else:
            png_rel = os.path.relpath(png, Path(a.md).parent)
    md = Path(a.md)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(r, png_rel))
    for label, detail, met in r.targets():
        print(f"{ok_mark(met).strip('*'):>12}  {label}: {detail}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("meta")
    m.add_argument("--out", required=True)
    m.add_argument("--scorer", required=True)
    m.add_argument("--model", required=True)
    m.add_argument("--command", required=True)
    m.add_argument("--set", action="append")
    r = sub.add_parser("render")
    r.add_argument("run")
    r.add_argument("--md", required=True)
    r.add_argument("--png")
    r.add_argument("--copy-png")
    a = p.parse_args(argv)
    return cmd_meta(a) if a.cmd == "meta" else cmd_render(a)


if __name__ == "__main__":
    sys.exit(main())
