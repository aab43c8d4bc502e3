#!/usr/bin/env python3
"""The moving parts of bench/soak.sh (issue 11, point 7), standard library only
except `pool`, which runs bench/gen_scl.py (numpy + polars, the bench venv).

    soak.py pool --dir POOL --real data/scl_flights_2017.csv --gen bench/gen_scl.py \
                 [--sizes "200000 3000 100000 20000 50000 8000"] [--seed 1000]
        Builds (once; reused while its inputs are unchanged) the files the soak
        drops: good ones (the real file, raw-layout files of each size, one of
        them gzipped) and bad ones (missing column, empty, header only, ragged
        rows, garbage bytes, truncated gzip), and POOL/pool.json describing each
        with the manifest it must produce. Prints the path of pool.json.
    soak.py addr --log FILE --pid PID [--timeout 30]
        Waits for the server's JSON log line {"message":"listening","addr":...}
        and prints the address (exit 1 if PID exits first or on timeout).
    soak.py drive --dir DIR --url URL --pid PID --pool pool.json --run RUN [knobs]
        For --duration seconds: drops a pool file into DIR/input every
        --file-every seconds (hidden temporary name in the same directory, then
        a rename), sends POST /predict at --predict-rate requests/s over
        --predict-conns connections (a share invalid, 400 expected), samples the
        server's RSS, peak RSS, open descriptors and threads every --sample
        seconds into RUN/samples.csv. At the end of the warm-up and at the end
        of the run it lets the pipeline go idle (every dropped file committed)
        and takes the "start" and "end" samples there. Then checks every
        dropped file's outputs. Writes RUN/driver.json; exit 1 if a check failed.
    soak.py report --run RUN --exit-code N [--rss-drift-max-mib 50] [--fd-drift-max 5]
        Adds the drift figures and the server's exit status to driver.json's
        checks, writes RUN/summary.json and RUN/summary.md, prints the Markdown.
        Exit 1 if any check failed.
"""
from __future__ import annotations

import argparse
import csv
import glob
import gzip
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

POOL_FORMAT = "soak-pool/1"  # bump when build_pool's definition of the files changes
RAW_HEADER = (
    "Fecha-I,Vlo-I,Ori-I,Des-I,Emp-I,Fecha-O,Vlo-O,Ori-O,Des-O,Emp-O,"
    "DIA,MES,AÑO,DIANOM,TIPOVUELO,OPERA,SIGLAORI,SIGLADES"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- pool ----------------------------------------------------------------------


def count_data_rows(path: Path) -> int:
    """Data rows of a CSV (header and blank lines excluded), as a CSV reader sees them."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        next(r, None)
        return sum(1 for row in r if row)


def build_pool(a: argparse.Namespace) -> int:
    gen = Path(a.gen)
    real = Path(a.real)
    sizes = [int(s) for s in a.sizes.split()]
    if not sizes:
        raise SystemExit("soak.py pool: --sizes is empty")
    h = hashlib.sha256()
    for part in (POOL_FORMAT, a.sizes, str(a.seed)):
        h.update(part.encode() + b"\0")
    for p in (gen, real):
        h.update(p.read_bytes())
    key = h.hexdigest()[:12]
    pool = Path(a.dir) / f"soak-pool-{key}"
    index = pool / "pool.json"
    if index.is_file():
        print(index)
        return 0
    tmp = Path(a.dir) / f".soak-pool-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    py = sys.executable

    def gen_raw(rows: int, seed: int, out: Path) -> None:
        log(f"pool: generating {rows} raw-layout rows -> {out.name}")
        subprocess.run(
            [py, str(gen), "--rows", str(rows), "--seed", str(seed), "--out", str(out), "--real", str(real), "--quiet"],
            check=True,
        )

    good: list[dict] = []
    bad: list[dict] = []

    def add_good(label: str, path: Path, ext: str) -> None:
        n = count_data_rows(path)
        good.append({
            "label": label, "kind": "good", "file": path.name if path.parent == tmp else str(path.resolve()),
            "ext": ext, "bytes": path.stat().st_size,
            "expect": {"status": "scored", "rows_in": n, "rows_scored": n, "rows_rejected": 0},
        })

    for i, n in enumerate(sizes):
        out = tmp / f"good_raw_{n}.csv"
        gen_raw(n, a.seed + i, out)
        add_good(f"good-raw{n}", out, ".csv")
        if i == len(sizes) // 2:  # one size also as gzip
            gz = tmp / f"good_raw_{n}.csv.gz"
            with open(out, "rb") as src, gzip.GzipFile(gz, "wb", compresslevel=6, mtime=0) as dst:
                shutil.copyfileobj(src, dst)
            add_good(f"good-gz{n}", gz, ".csv.gz")
    add_good("good-scl2017", real, ".csv")

    # Bad files: every one must end in a manifest, never in a retry or a dead letter.
    base = tmp / "base_1000.csv"
    gen_raw(1000, a.seed + 99, base)
    lines = base.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0].split(","), lines[1:]

    def add_bad(label: str, name: str, data: bytes, expect: dict) -> None:
        p = tmp / name
        p.write_bytes(data)
        bad.append({"label": label, "kind": "bad", "file": name, "ext": ".csv.gz" if name.endswith(".gz") else ".csv",
                    "bytes": len(data), "expect": expect})

    drop = header.index("TIPOVUELO")
    missing = [",".join(c for j, c in enumerate(line.split(",")) if j != drop) for line in lines]
    add_bad("bad-missing-column", "bad_missing_column.csv", ("\n".join(missing) + "\n").encode(),
            {"status": "failed", "failure": "missing required column TIPOVUELO"})
    add_bad("bad-empty", "bad_empty.csv", b"", {"status": "failed", "failure": "the file is empty"})
    add_bad("bad-header-only", "bad_header_only.csv", (lines[0] + "\n").encode(),
            {"status": "failed", "failure": "no data rows"})
    ragged, rejected = [lines[0]], 0
    for i, line in enumerate(rows):
        if i % 100 == 7:  # a field short
            line, rejected = line.rsplit(",", 1)[0], rejected + 1
        elif i % 100 == 57:  # a field too many
            line, rejected = line + ",extra", rejected + 1
        ragged.append(line)
    add_bad("bad-ragged", "bad_ragged.csv", ("\n".join(ragged) + "\n").encode(),
            {"status": "scored", "rows_in": len(rows), "rows_scored": len(rows) - rejected, "rows_rejected": rejected})
    garbage = random.Random(a.seed).randbytes(64 * 1024)
    add_bad("bad-garbage", "bad_garbage.csv", garbage, {"status": "failed"})
    whole = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)
    add_bad("bad-truncated-gz", "bad_truncated.csv.gz", whole[: len(whole) // 2],
            {"status": "failed", "failure": "cannot be decoded"})
    base.unlink()

    doc = {"format": POOL_FORMAT, "key": key, "good": good, "bad": bad}
    (tmp / "pool.json").write_text(json.dumps(doc, indent=2) + "\n")
    shutil.rmtree(pool, ignore_errors=True)
    tmp.rename(pool)
    for old in Path(a.dir).glob("soak-pool-*"):  # earlier definitions
        if old != pool:
            shutil.rmtree(old, ignore_errors=True)
    print(index)
    return 0


def pool_path(pool_json: Path, entry: dict) -> Path:
    f = Path(entry["file"])
    return f if f.is_absolute() else pool_json.parent / f


# --- addr ----------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wait_addr(a: argparse.Namespace) -> int:
    deadline = time.monotonic() + a.timeout
    while True:
        try:
            with open(a.log, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("message") == "listening" and rec.get("addr"):
                        print(rec["addr"])
                        return 0
        except FileNotFoundError:
            pass
        if not pid_alive(a.pid):
            log(f"soak.py addr: process {a.pid} exited before logging its address")
            return 1
        if time.monotonic() > deadline:
            log(f"soak.py addr: no 'listening' line in {a.log} within {a.timeout:.0f} s (is LOG_FORMAT=json?)")
            return 1
        time.sleep(0.02)


# --- drive ---------------------------------------------------------------------


def read_proc(pid: int) -> dict | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    out = {"fds": fds}
    for key, name in (("VmRSS", "rss_kib"), ("VmHWM", "hwm_kib"), ("Threads", "threads")):
        m = re.search(rf"^{key}:\s+(\d+)", status, re.M)
        out[name] = int(m.group(1)) if m else None
    return out


def http_get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def parse_metrics(text: str) -> dict:
    """The Prometheus samples we use: {name{labels}: value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


class Predictor:
    """POST /predict traffic at a steady rate, valid and invalid requests mixed."""

    INVALID = ["unknown_airline", "bad_tipovuelo", "mes_13", "missing_field", "empty_list", "not_json", "flights_not_list"]

    def __init__(self, host: str, port: int, rate: float, conns: int, invalid_pct: float, big_pct: float,
                 reconnect_every: int, opera: list[str], seed: int):
        self.host, self.port = host, port
        self.rate, self.conns = rate, conns
        self.invalid_pct, self.big_pct = invalid_pct, big_pct
        self.reconnect_every = reconnect_every
        self.opera = opera
        self.seed = seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.by_status: dict[str, int] = {}
        self.by_kind: dict[str, dict[str, int]] = {}
        self.unexpected: dict[str, int] = {}
        self.examples: list[dict] = []
        self.latencies_ms: list[float] = []
        self.connections = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(conns)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def total(self) -> int:
        with self.lock:
            return sum(self.by_status.values())

    def _flight(self, rng: random.Random) -> dict:
        mes = rng.randint(1, 12)
        return {"OPERA": rng.choice(self.opera), "TIPOVUELO": rng.choice("IN"), "MES": mes if rng.random() < 0.8 else str(mes)}

    def _request(self, rng: random.Random) -> tuple[str, bytes, int]:
        """(kind, body, expected status)."""
        if rng.random() * 100 < self.invalid_pct:
            kind = rng.choice(self.INVALID)
            flights = [self._flight(rng) for _ in range(rng.randint(1, 5))]
            bad = flights[rng.randrange(len(flights))]
            if kind == "unknown_airline":
                bad["OPERA"] = "Nowhere Air"
            elif kind == "bad_tipovuelo":
                bad["TIPOVUELO"] = "X"
            elif kind == "mes_13":
                bad["MES"] = 13
            elif kind == "missing_field":
                del bad[rng.choice(["OPERA", "TIPOVUELO", "MES"])]
            elif kind == "empty_list":
                flights = []
            elif kind == "not_json":
                return kind, b'{"flights": [{"OPERA": "Grupo LATAM", ', 400
            elif kind == "flights_not_list":
                return kind, json.dumps({"flights": flights[0]}).encode(), 400
            return kind, json.dumps({"flights": flights}).encode(), 400
        if rng.random() * 100 < self.big_pct:
            return "valid_big", json.dumps({"flights": [self._flight(rng) for _ in range(1000)]}).encode(), 200
        flights = [self._flight(rng) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.1:
            return "valid_instances", json.dumps({"instances": flights}).encode(), 200
        return "valid", json.dumps({"flights": flights}).encode(), 200

    def _record(self, kind: str, status: str, expected: int, ms: float, detail: str) -> None:
        with self.lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            k = self.by_kind.setdefault(kind, {})
            k[status] = k.get(status, 0) + 1
            if ms >= 0:
                self.latencies_ms.append(ms)
            if status != str(expected):
                key = f"{kind}->{status}"
                self.unexpected[key] = self.unexpected.get(key, 0) + 1
                if len(self.examples) < 20:
                    self.examples.append({"kind": kind, "status": status, "expected": expected, "detail": detail[:300],
                                          "time": time.strftime("%H:%M:%S")})

    def _run(self, i: int) -> None:
        rng = random.Random(self.seed * 1000 + i)
        period = self.conns / self.rate
        next_t = time.monotonic() + rng.random() * period
        conn, used = None, 0
        while not self.stop.is_set():
            now = time.monotonic()
            if now < next_t:
                self.stop.wait(next_t - now)
                continue
            next_t += period
            if next_t < now:  # fell behind: no catch-up burst
                next_t = now + period
            kind, body, expected = self._request(rng)
            if conn is None:
                conn, used = http.client.HTTPConnection(self.host, self.port, timeout=15), 0
                with self.lock:
                    self.connections += 1
            t0 = time.perf_counter()
            detail, close = "", False
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                text = r.read()
                status = str(r.status)
                close = r.will_close
                if r.status != expected:
                    detail = text.decode("utf-8", "replace")
                ms = (time.perf_counter() - t0) * 1000.0
            except (OSError, http.client.HTTPException) as e:
                status, detail, close, ms = f"error:{type(e).__name__}", str(e), True, -1.0
            used += 1
            if close or used >= self.reconnect_every:
                conn.close()
                conn = None
            self._record(kind, status, expected, ms, detail)
        if conn is not None:
            conn.close()


def bad_share(bad_every: int) -> str:
    return f"1 in {bad_every} bad" if bad_every else "no bad ones"


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100.0 * len(s)) - 1))]


def manifests_of(out_dir: Path, name: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(str(out_dir / name)), "*", "manifest.json")))


def drive(a: argparse.Namespace) -> int:
    pool_json = Path(a.pool)
    pool = json.loads(pool_json.read_text())
    run = Path(a.run)
    root = Path(a.dir)
    inp, out, dead = root / "input", root / "output", root / "dead-letter"
    u = urllib.parse.urlsplit(a.url)
    host, port = u.hostname, u.port
    if a.warmup >= a.duration:
        raise SystemExit(f"soak.py drive: the warm-up ({a.warmup:.0f} s) must be shorter than the run ({a.duration:.0f} s)")
    model = json.loads(Path(a.model).read_text())
    opera = next(list(f["weights"]) for f in model["features"] if f["name"] == "OPERA")

    # The drop order: every --bad-every-th file is bad; good and bad each cycle
    # through their entries (good in pool order, the largest first).
    good, bad = pool["good"], pool["bad"]
    if a.bad_every < 0:
        raise SystemExit("--bad-every must be 0 (no bad files) or more")

    def entry_for(k: int) -> dict:
        if a.bad_every and k % a.bad_every == a.bad_every - 1:
            return bad[(k // a.bad_every) % len(bad)]
        n_good = k - (k // a.bad_every if a.bad_every else 0)
        return good[n_good % len(good)]

    pushed: list[dict] = []
    pushed_lock = threading.Lock()
    pushed_log = open(run / "pushed.jsonl", "w")
    # Committed names (at least one manifest), updated by the checks below; a set
    # so repeated waits only look at what is still pending.
    committed: set[str] = set()

    def push(k: int) -> None:
        e = entry_for(k)
        name = f"soak-{k:05d}-{e['label']}{e['ext']}"
        tmp = inp / f".{name}.tmp"
        shutil.copyfile(pool_path(pool_json, e), tmp)
        os.rename(tmp, inp / name)
        st = os.stat(inp / name)
        rec = {"seq": k, "name": name, "label": e["label"], "kind": e["kind"], "bytes": st.st_size,
               "generation": str(st.st_mtime_ns), "t": round(time.monotonic() - t0, 3), "expect": e["expect"]}
        with pushed_lock:
            pushed.append(rec)
        pushed_log.write(json.dumps(rec) + "\n")
        pushed_log.flush()

    def pending() -> list[str]:
        with pushed_lock:
            names = [p["name"] for p in pushed]
        for n in names:
            if n not in committed and manifests_of(out, n):
                committed.add(n)
        return [n for n in names if n not in committed]

    def jobs_in_flight() -> float | None:
        try:
            status, text = http_get(host, port, "/metrics")
        except (OSError, http.client.HTTPException):
            return None
        return parse_metrics(text).get("scorer_jobs_in_flight") if status == 200 else None

    def wait_idle(timeout: float) -> tuple[list[str], float]:
        """Until every dropped file is committed and no job runs; (still pending, seconds waited)."""
        t = time.monotonic()
        while True:
            left = pending()
            if not left and jobs_in_flight() == 0:
                return [], time.monotonic() - t
            if time.monotonic() - t > timeout or not pid_alive(a.pid):
                return left, time.monotonic() - t
            time.sleep(0.1)

    predictor = Predictor(host, port, a.predict_rate, a.predict_conns, a.invalid_pct, a.big_pct,
                          a.reconnect_every, opera, a.seed)

    sample_lock = threading.Lock()
    samples_f = open(run / "samples.csv", "w", newline="")
    sw = csv.writer(samples_f)
    sw.writerow(["t_s", "phase", "rss_kib", "hwm_kib", "fds", "threads", "files_pushed", "files_committed",
                 "predict_requests", "jobs_in_flight"])
    phase = {"name": "warmup"}
    server_died = threading.Event()

    def sample(label: str | None = None) -> dict | None:
        p = read_proc(a.pid)
        if p is None:
            server_died.set()
            return None
        with pushed_lock:
            n_pushed = len(pushed)
        pending()
        row = {"t_s": round(time.monotonic() - t0, 2), "phase": label or phase["name"], **p,
               "files_pushed": n_pushed, "files_committed": len(committed),
               "predict_requests": predictor.total(), "jobs_in_flight": jobs_in_flight()}
        with sample_lock:
            sw.writerow([row[c] for c in ("t_s", "phase", "rss_kib", "hwm_kib", "fds", "threads", "files_pushed",
                                          "files_committed", "predict_requests", "jobs_in_flight")])
            samples_f.flush()
        return row

    stop_sampler = threading.Event()

    def sampler() -> None:
        k = 0
        while not stop_sampler.is_set():
            due = t0 + k * a.sample
            now = time.monotonic()
            if now < due:
                stop_sampler.wait(due - now)
                continue
            k = int((now - t0) // a.sample) + 1
            if sample() is None:
                return

    checks: list[dict] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        log(f"check {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")

    t0 = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    predictor.start()
    sampler_t = threading.Thread(target=sampler, daemon=True)
    sampler_t.start()
    log(f"soak: {a.duration:.0f} s, a file every {a.file_every:g} s ({bad_share(a.bad_every)}), "
        f"{a.predict_rate:g} predictions/s on {a.predict_conns} connections, samples every {a.sample:g} s "
        f"(warm-up {a.warmup:g} s)")
    start_row = end_row = None
    baseline_waits = {}
    k = 0
    next_progress = 60.0
    try:
        while not server_died.is_set():
            now = time.monotonic() - t0
            if start_row is None and now >= a.warmup:
                left, waited = wait_idle(a.drain_timeout)
                baseline_waits["start_idle_wait_s"] = round(waited, 2)
                if left:
                    log(f"warm-up: {len(left)} files still uncommitted after {waited:.0f} s; start sample taken anyway")
                start_row = sample("start") or {}
                phase["name"] = "run"
                log(f"start sample (idle, after {waited:.1f} s): RSS {start_row.get('rss_kib', 0) / 1024:.1f} MiB, "
                    f"{start_row.get('fds')} FDs, {start_row.get('threads')} threads")
                continue
            if now >= a.duration:
                break
            due = k * a.file_every
            if now < due:
                time.sleep(min(due - now, 0.5))
                continue
            push(k)
            k += 1
            if now >= next_progress:
                p = read_proc(a.pid) or {}
                log(f"{now:5.0f} s: {len(pushed)} files dropped, {len(committed)} seen committed, "
                    f"{predictor.total()} predictions, RSS {p.get('rss_kib', 0) / 1024:.1f} MiB, {p.get('fds')} FDs")
                next_progress += 60.0
            if k * a.file_every < now - a.file_every:  # fell behind (slow disk): skip, no bursts
                k = int(now // a.file_every) + 1
        phase["name"] = "drain"
        log(f"drain: {len(pushed)} files dropped; waiting for every one to be committed "
            f"(up to {a.drain_timeout:.0f} s)")
        left, waited = wait_idle(a.drain_timeout)
        baseline_waits["end_idle_wait_s"] = round(waited, 2)
        end_row = sample("end")
    finally:
        stop_sampler.set()
        sampler_t.join(timeout=10)
        predictor.finish()
        samples_f.close()
        pushed_log.close()
    ended_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    elapsed = time.monotonic() - t0

    # --- checks ------------------------------------------------------------------
    check("server stayed up", not server_died.is_set() and pid_alive(a.pid),
          "" if pid_alive(a.pid) else f"process {a.pid} is gone")
    check("every dropped file committed", not left,
          f"{len(pushed) - len(left)}/{len(pushed)} within {waited:.1f} s of the end"
          + (f"; missing: {', '.join(left[:5])}" if left else ""))

    problems: list[str] = []
    by_label: dict[str, dict[str, int]] = {}
    for p in pushed:
        ms = manifests_of(out, p["name"])
        tally = by_label.setdefault(p["label"], {"pushed": 0, "ok": 0})
        tally["pushed"] += 1
        why = []
        if len(ms) != 1:
            why.append(f"{len(ms)} manifests")
        for m in ms[:1]:
            gen_dir = Path(m).parent.name
            if gen_dir != p["generation"]:
                why.append(f"generation {gen_dir}, file mtime {p['generation']}")
            try:
                doc = json.loads(Path(m).read_text())
            except (OSError, ValueError) as e:
                why.append(f"unreadable manifest: {e}")
                continue
            ex, rows = p["expect"], doc.get("rows", {})
            if doc.get("status") != ex["status"]:
                why.append(f"status {doc.get('status')} (failure: {doc.get('failure')}), expected {ex['status']}")
            for key, field in (("rows_in", "in"), ("rows_scored", "scored"), ("rows_rejected", "rejected")):
                if key in ex and rows.get(field) != ex[key]:
                    why.append(f"rows.{field} {rows.get(field)}, expected {ex[key]}")
            if "failure" in ex and ex["failure"] not in (doc.get("failure") or ""):
                why.append(f"failure {doc.get('failure')!r}, expected it to contain {ex['failure']!r}")
            if doc.get("input", {}).get("generation") != p["generation"]:
                why.append(f"manifest generation {doc.get('input', {}).get('generation')}")
        if why:
            problems.append(f"{p['name']}: {'; '.join(why)}")
        else:
            tally["ok"] += 1
    check("one manifest per file, with the expected status and rows", not problems,
          f"{len(pushed) - len(problems)}/{len(pushed)} as expected" + (f"; {' | '.join(problems[:5])}" if problems else ""))

    names = {p["name"] for p in pushed}
    strays = sorted(n for n in (os.listdir(out) if out.is_dir() else [])
                    if not n.startswith(("_", ".")) and n not in names)
    check("no outputs for names never dropped", not strays, ", ".join(strays[:5]))
    # Temporary files: the store's (output/.scorer-tmp/) and our own hidden names
    # in input/ must all be gone once everything is committed.
    leftovers = [str(Path(dp, fn).relative_to(root)) for top in (out / ".scorer-tmp", inp)
                 for dp, _, fns in os.walk(top) for fn in fns
                 if top != inp or fn.startswith(".")]
    check("no temporary files left behind", not leftovers,
          f"{len(leftovers)}: {', '.join(leftovers[:5])}" if leftovers else "")
    dead_letters = sorted(os.listdir(dead)) if dead.is_dir() else []
    check("no dead letters", not dead_letters, f"{len(dead_letters)} in {dead}" if dead_letters else "")

    with predictor.lock:
        unexpected = dict(predictor.unexpected)
        by_status = dict(sorted(predictor.by_status.items()))
        by_kind = {k: dict(sorted(v.items())) for k, v in sorted(predictor.by_kind.items())}
        lat = list(predictor.latencies_ms)
        examples = list(predictor.examples)
    n_unexpected = sum(unexpected.values())
    check("no unexpected /predict statuses", n_unexpected == 0,
          f"{n_unexpected} of {sum(by_status.values())}: {unexpected}" if n_unexpected else
          f"{sum(by_status.values())} requests, each 200 (valid) or 400 (invalid) as expected")

    server_counts: dict[str, int] = {}
    metrics: dict = {}
    try:
        status, text = http_get(host, port, "/metrics")
        metrics = parse_metrics(text) if status == 200 else {}
    except (OSError, http.client.HTTPException):
        pass
    for key, v in metrics.items():
        m = re.fullmatch(r'scorer_http_responses_total\{route="/predict",status="(\d+)"\}', key)
        if m:
            server_counts[m.group(1)] = int(v)
    client_http = {s: n for s, n in by_status.items() if s.isdigit()}
    server_counts = dict(sorted(server_counts.items()))
    check("the server counted the same /predict responses", server_counts == client_http,
          f"server {server_counts}, client {client_http}")
    jobs = {re.sub(r".*outcome=\"([^\"]+)\".*", r"\1", k): int(v) for k, v in metrics.items() if k.startswith("scorer_jobs_total")}

    n_good = sum(1 for p in pushed if p["kind"] == "good")
    doc = {
        "started_at": started_at, "ended_at": ended_at, "elapsed_s": round(elapsed, 1),
        "config": {"duration_s": a.duration, "file_every_s": a.file_every, "bad_every": a.bad_every,
                   "predict_rate": a.predict_rate, "predict_conns": a.predict_conns,
                   "invalid_pct": a.invalid_pct, "big_pct": a.big_pct, "reconnect_every": a.reconnect_every,
                   "sample_s": a.sample, "warmup_s": a.warmup, "drain_timeout_s": a.drain_timeout,
                   "pool": str(pool_json)},
        "files": {"pushed": len(pushed), "good": n_good, "bad": len(pushed) - n_good,
                  "bytes": sum(p["bytes"] for p in pushed),
                  "rows_good": sum(p["expect"].get("rows_in", 0) for p in pushed if p["kind"] == "good"),
                  "by_label": dict(sorted(by_label.items()))},
        "baseline": baseline_waits,
        "predict": {"requests": sum(by_status.values()), "by_status": by_status, "by_kind": by_kind,
                    "unexpected": unexpected, "unexpected_examples": examples,
                    "connections_opened": predictor.connections,
                    "latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                                   "max": max(lat) if lat else None},
                    "server_counts": server_counts},
        "server_jobs_by_outcome": jobs,
        "server_rows": {"scored": metrics.get("scorer_rows_scored_total"), "rejected": metrics.get("scorer_rows_rejected_total")},
        "dead_letters": dead_letters[:20],
        "problems": problems[:50],
        "checks": checks,
    }
    (run / "driver.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(c["ok"] for c in checks) else 1


# --- report --------------------------------------------------------------------


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 3600.0


def log_counts(path: Path) -> dict:
    sev: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    errors: list[str] = []
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    sev["(not JSON)"] = sev.get("(not JSON)", 0) + 1
                    continue
                s = rec.get("severity", "?")
                sev[s] = sev.get(s, 0) + 1
                if rec.get("message") == "job summary":
                    o = rec.get("outcome", "?")
                    outcomes[o] = outcomes.get(o, 0) + 1
                if s in ("ERROR", "CRITICAL", "ALERT", "EMERGENCY") and len(errors) < 10:
                    errors.append(line.strip()[:400])
    return {"by_severity": dict(sorted(sev.items())), "job_summaries_by_outcome": dict(sorted(outcomes.items())),
            "error_lines": errors}


def mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024.0, 1)


def report(a: argparse.Namespace) -> int:
    run = Path(a.run)
    try:
        d = json.loads((run / "driver.json").read_text())
    except (OSError, ValueError):
        d = {"checks": [{"check": "the driver finished", "ok": False, "detail": "no driver.json"}]}
    checks = list(d.get("checks", []))

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    rows = []
    if (run / "samples.csv").is_file():
        with open(run / "samples.csv", newline="") as f:
            for r in csv.DictReader(f):
                if r["rss_kib"]:
                    rows.append(r)
    num = lambda r, k: float(r[k]) if r.get(k) not in (None, "", "None") else None  # noqa: E731
    start = next((r for r in rows if r["phase"] == "start"), None)
    end = next((r for r in rows if r["phase"] == "end"), None)
    after = [r for r in rows if r["phase"] != "warmup"]
    mem: dict = {"samples": len(rows)}
    if start and end and after:
        rss_pts = [(num(r, "t_s"), num(r, "rss_kib") / 1024.0) for r in after]
        fd_pts = [(num(r, "t_s"), num(r, "fds")) for r in after]
        hours = (num(end, "t_s") - num(start, "t_s")) / 3600.0
        mem.update({
            "window_s": round(hours * 3600.0, 1),
            "rss_mib": {"start": mib(num(start, "rss_kib")), "end": mib(num(end, "rss_kib")),
                        "max": mib(max(num(r, "rss_kib") for r in rows)),
                        "peak_hwm": mib(max(num(r, "hwm_kib") for r in rows)),
                        "drift": mib(num(end, "rss_kib") - num(start, "rss_kib")),
                        "slope_per_hour": round(slope_per_hour(rss_pts) or 0.0, 2)},
            "fds": {"start": int(num(start, "fds")), "end": int(num(end, "fds")),
                    "max": int(max(num(r, "fds") for r in rows)),
                    "drift": int(num(end, "fds") - num(start, "fds")),
                    "slope_per_hour": round(slope_per_hour(fd_pts) or 0.0, 2)},
            "threads": {"start": int(num(start, "threads")), "end": int(num(end, "threads")),
                        "max": int(max(num(r, "threads") for r in rows))},
        })
        rd, fdd = mem["rss_mib"]["drift"], mem["fds"]["drift"]
        check(f"RSS drift within {a.rss_drift_max_mib:g} MiB", rd <= a.rss_drift_max_mib,
              f"{rd:+.1f} MiB (start {mem['rss_mib']['start']}, end {mem['rss_mib']['end']}), "
              f"slope {mem['rss_mib']['slope_per_hour']:+.2f} MiB/h")
        check(f"FD growth within {a.fd_drift_max}", fdd <= a.fd_drift_max,
              f"{fdd:+d} (start {mem['fds']['start']}, end {mem['fds']['end']}), "
              f"slope {mem['fds']['slope_per_hour']:+.2f}/h")
    else:
        check("start and end samples taken", False, "no start/end sample in samples.csv")
    check("SIGTERM: exit status 0", a.exit_code == 0 and not a.killed,
          f"exit status {a.exit_code}" + (" (did not stop in time: killed)" if a.killed else "")
          + (f", stopped in {a.stop_seconds:.2f} s" if a.stop_seconds is not None else ""))
    logs = log_counts(run / "server.log")
    n_err = sum(n for s, n in logs["by_severity"].items() if s in ("ERROR", "CRITICAL", "ALERT", "EMERGENCY"))
    check("no ERROR lines in the server log", n_err == 0, f"{n_err} (first: {logs['error_lines'][:1]})" if n_err else "")

    ok = all(c["ok"] for c in checks)
    summary = {
        "result": "pass" if ok else "FAIL",
        "command": a.command, "date": d.get("started_at"), "ended_at": d.get("ended_at"),
        "elapsed_s": d.get("elapsed_s"), "machine": a.machine, "scorer": a.scorer,
        "config": d.get("config"),
        "thresholds": {"rss_drift_max_mib": a.rss_drift_max_mib, "fd_drift_max": a.fd_drift_max},
        "files": d.get("files"), "predict": d.get("predict"), "memory": mem,
        "baseline": d.get("baseline"),
        "server": {"exit_code": a.exit_code, "killed": a.killed, "stop_seconds": a.stop_seconds,
                   "jobs_by_outcome": d.get("server_jobs_by_outcome"), "rows": d.get("server_rows"),
                   "log": logs},
        "problems": d.get("problems", []),
        "checks": checks,
        "run_dir": str(run),
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = render_md(summary)
    (run / "summary.md").write_text(md)
    print(md)
    return 0 if ok else 1


def render_md(s: dict) -> str:
    f, p, m, cfg = s.get("files") or {}, s.get("predict") or {}, s.get("memory") or {}, s.get("config") or {}
    L = [f"Soak {s['result']}: `{s['command']}`, started {s.get('date')} (UTC), "
         f"{(s.get('elapsed_s') or 0) / 60:.1f} min, on {s.get('machine')}.", "",
         f"Binary: `{s.get('scorer')}`.", ""]
    if cfg:
        L += [f"Settings: a file every {cfg['file_every_s']:g} s ({bad_share(cfg['bad_every'])}), "
              f"{cfg['predict_rate']:g} `/predict` requests/s on {cfg['predict_conns']} connections "
              f"({cfg['invalid_pct']:g}% invalid, {cfg['big_pct']:g}% of the valid ones with 1,000 flights, a new connection every "
              f"{cfg['reconnect_every']} requests), a sample every {cfg['sample_s']:g} s, warm-up {cfg['warmup_s']:g} s.", ""]
    L += ["| what | figure |", "|---|---|"]
    if f:
        L.append(f"| files dropped | {f['pushed']} ({f['good']} good, {f['bad']} bad), "
                 f"{f['bytes'] / 1e9:.2f} GB, {f['rows_good']:,} good rows |")
        L.append("| files by kind (as expected / dropped) | "
                 + ", ".join(f"{k} {v['ok']}/{v['pushed']}" for k, v in f["by_label"].items()) + " |")
    sv = s.get("server") or {}
    if sv.get("jobs_by_outcome"):
        L.append("| server jobs by outcome (`/metrics`) | "
                 + ", ".join(f"{k} {v}" for k, v in sorted(sv["jobs_by_outcome"].items())) + " |")
    if p:
        lat = p.get("latency_ms") or {}
        L.append(f"| `/predict` requests | {p['requests']:,}: "
                 + ", ".join(f"{k}: {v:,}" for k, v in p["by_status"].items())
                 + f"; unexpected: {sum(p['unexpected'].values())} |")
        if lat.get("p50") is not None:
            L.append(f"| `/predict` latency | p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.1f} ms |")
    if "rss_mib" in m:
        r, fd, th = m["rss_mib"], m["fds"], m["threads"]
        L += [
            f"| RSS start / end / max (MiB) | {r['start']} / {r['end']} / {r['max']} (peak VmHWM {r['peak_hwm']}) |",
            f"| RSS drift | {r['drift']:+.1f} MiB over {m['window_s'] / 60:.1f} min; slope {r['slope_per_hour']:+.2f} MiB/h |",
            f"| open FDs start / end / max | {fd['start']} / {fd['end']} / {fd['max']}; drift {fd['drift']:+d}, "
            f"slope {fd['slope_per_hour']:+.2f}/h |",
            f"| threads start / end / max | {th['start']} / {th['end']} / {th['max']} |",
        ]
    if sv:
        L.append(f"| shutdown (SIGTERM) | exit {sv['exit_code']}"
                 + (f" in {sv['stop_seconds']:.2f} s" if sv.get("stop_seconds") is not None else "")
                 + (" (killed)" if sv.get("killed") else "") + " |")
        lg = sv.get("log") or {}
        if lg.get("by_severity"):
            L.append("| server log lines | " + ", ".join(f"{k} {v}" for k, v in lg["by_severity"].items()) + " |")
    L += ["", "| check | result | detail |", "|---|---|---|"]
    for c in s["checks"]:
        L.append(f"| {c['check']} | {'ok' if c['ok'] else '**FAIL**'} | {c['detail'].replace('|', '/')} |")
    L += ["", f"Raw results: `{s['run_dir']}` (`samples.csv`, `pushed.jsonl`, `driver.json`, `summary.json`, `server.log`).", ""]
    return "\n".join(L)


# --- main ----------------------------------------------------------------------


def seconds(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90, 60s, 20m, 1h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("pool")
    b.add_argument("--dir", required=True)
    b.add_argument("--real", required=True)
    b.add_argument("--gen", required=True)
    b.add_argument("--sizes", default="200000 3000 100000 20000 50000 8000")
    b.add_argument("--seed", type=int, default=1000)
    w = sub.add_parser("addr")
    w.add_argument("--log", required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--timeout", type=float, default=30)
    d = sub.add_parser("drive")
    d.add_argument("--dir", required=True)
    d.add_argument("--url", required=True)
    d.add_argument("--pid", type=int, required=True)
    d.add_argument("--pool", required=True)
    d.add_argument("--run", required=True)
    d.add_argument("--model", required=True)
    d.add_argument("--duration", type=seconds, default=1200)
    d.add_argument("--file-every", type=seconds, default=2)
    d.add_argument("--bad-every", type=int, default=3)
    d.add_argument("--predict-rate", type=float, default=20)
    d.add_argument("--predict-conns", type=int, default=2)
    d.add_argument("--invalid-pct", type=float, default=10)
    d.add_argument("--big-pct", type=float, default=1)
    d.add_argument("--reconnect-every", type=int, default=50)
    d.add_argument("--sample", type=seconds, default=10)
    d.add_argument("--warmup", type=seconds, default=30)
    d.add_argument("--drain-timeout", type=seconds, default=300)
    d.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("report")
    r.add_argument("--run", required=True)
    r.add_argument("--exit-code", type=int, required=True)
    r.add_argument("--killed", action="store_true")
    r.add_argument("--stop-seconds", type=float)
    r.add_argument("--rss-drift-max-mib", type=float, default=50)
    r.add_argument("--fd-drift-max", type=int, default=5)
    r.add_argument("--command", default="bench/soak.sh")
    r.add_argument("--machine", default="")
    r.add_argument("--scorer", default="")
    a = p.parse_args(argv)
    if a.what == "drive":
        for k in ("duration", "file_every", "sample", "predict_rate"):
            if getattr(a, k) <= 0:
                p.error(f"--{k.replace('_', '-')} must be positive")
        if a.predict_conns < 1 or a.reconnect_every < 1:
            p.error("--predict-conns and --reconnect-every must be at least 1")
    return {"pool": build_pool, "addr": wait_addr, "drive": drive, "report": report}[a.what](a)


if __name__ == "__main__":
    sys.exit(main())
