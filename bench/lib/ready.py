#!/usr/bin/env python3
"""Small process/HTTP helpers for bench/compare.sh (standard library only).

    ready.py wait URL [--timeout 60] [--pid PID]
        Polls URL every millisecond until it answers 200; prints the seconds
        waited. Exit 1 on timeout, or as soon as process PID has exited.
    ready.py startup --url URL [--runs 5] [--cpu 0] [--timeout 30] -- CMD [ARGS...]
        Starts CMD --runs times; each time measures from just before the process
        is created to URL answering 200, then stops it (SIGTERM, then SIGKILL
        after 5 s). Prints one JSON object: the runs in ms and their median.
        --cpu pins the child (sched_setaffinity, no extra exec).
    ready.py freeport
        Prints a free TCP port on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse


def status_of(url: str, timeout: float = 1.0) -> int | None:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        conn.request("GET", u.path or "/", headers={"Connection": "close"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child: look it up (a zombie has exited)
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None, pid: int | None = None) -> float:
    t0 = time.perf_counter()
    while True:
        if status_of(url) == 200:
            return time.perf_counter() - t0
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered 200")
        if pid is not None and not alive(pid):
            raise RuntimeError(f"process {pid} exited before {url} answered 200")
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.001)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def startup(url: str, runs: int, cpu: int | None, timeout: float, cmd: list[str]) -> dict:
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    # The port must be free before each start, or we would time the old process.
    samples = []
    for _ in range(runs):
        deadline = time.perf_counter() + 10
        while status_of(url, timeout=0.2) is not None:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{url} still answers before start: port in use?")
            time.sleep(0.05)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, preexec_fn=pin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(url, timeout, proc=proc)
            samples.append((time.perf_counter() - t0) * 1000.0)
        finally:
            stop(proc)
    return {"runs_ms": [round(s, 2) for s in samples], "median_ms": round(statistics.median(samples), 2)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("wait")
    w.add_argument("url")
    w.add_argument("--timeout", type=float, default=60)
    w.add_argument("--pid", type=int)
    s = sub.add_parser("startup")
    s.add_argument("--url", required=True)
    s.add_argument("--runs", type=int, default=5)
    s.add_argument("--cpu", type=int)
    s.add_argument("--timeout", type=float, default=30)
    sub.add_parser("freeport")
    a = p.parse_args(argv)
    try:
        if a.what == "wait":
            print(f"{wait_ready(a.url, a.timeout, pid=a.pid):.3f}")
        elif a.what == "startup":
            if not cmd:
                p.error("startup needs -- CMD [ARGS...]")
            print(json.dumps(startup(a.url, a.runs, a.cpu, a.timeout, cmd)))
        else:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                print(sock.getsockname()[1])
    except (RuntimeError, TimeoutError) as e:
        print(f"ready.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
