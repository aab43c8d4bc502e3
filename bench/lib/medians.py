"""Medians of the runs bench_timed recorded, and ratios ours / theirs.

    medians.py TIMES [LABEL=OURS/THEIRS ...]

TIMES holds one "NAME wall_s peak_kib" line per run. Prints each name's
median wall time and largest peak RSS, then for each LABEL=OURS/THEIRS the
ratios of OURS's figures to THEIRS's (below 1: ours is faster or smaller).
"""
import statistics
import sys

runs = {}
for line in open(sys.argv[1]):
    name, wall, kib = line.split()
    runs.setdefault(name, []).append((float(wall), int(kib)))
med = {n: (statistics.median(w for w, _ in r), max(k for _, k in r)) for n, r in runs.items()}
for n, (w, k) in med.items():
    print(f"{n:16} median wall {w:6.2f} s   peak RSS {k / 1024:7.0f} MiB   ({len(runs[n])} runs)")
for ratio in sys.argv[2:]:
    label, pair = ratio.split("=", 1)
    ours, theirs = pair.split("/", 1)
    (ow, ok), (tw, tk) = med[ours], med[theirs]
    print(f"{label}: wall {ow / tw:.2f}, peak memory {ok / tk:.2f}")
