#!/usr/bin/env python3
"""Checks that scorers agree: row counts, and on the first N rows every column.

    verify_outputs.py --ref OURS.csv [--rows 10000] [--json] OTHER.csv [OTHER.csv ...]

For each OTHER output against the reference (ours):
  - the same number of data rows;
  - on the first N rows: the same prediction (0/1) in every row, probabilities
    within --tol (default 1e-9 absolute; engines print floats differently), and
    every other column identical as text (so the rows line up and input columns
    passed through untouched).
Exit 0 when all agree, 1 otherwise. --json prints one JSON object per file.
"""
from __future__ import annotations

import argparse
import json
import sys

import polars as pl


def count_rows(path: str) -> int:
    return int(pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item())


def head(path: str, n: int) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False, n_rows=n)


def compare(ref: pl.DataFrame, ref_rows: int, path: str, n: int, tol: float) -> dict:
    res: dict = {"file": path, "ref_rows": ref_rows}
    res["rows"] = count_rows(path)
    res["rows_match"] = res["rows"] == ref_rows
    other = head(path, n)
    k = min(ref.height, other.height)
    res["checked"] = k
    problems = []
    if ref.height != other.height:
        problems.append(f"first-N heights differ: {ref.height} vs {other.height}")
    for col in ("probability", "prediction"):
        if col not in other.columns:
            problems.append(f"no {col} column")
    if not problems:
        a, b = ref.head(k), other.head(k)
        pa = a["prediction"].str.strip_chars().cast(pl.Int64, strict=False)
        pb = b["prediction"].str.strip_chars().cast(pl.Int64, strict=False)
        res["prediction_mismatches"] = int((pa != pb).fill_null(True).sum())
        fa = a["probability"].cast(pl.Float64, strict=False)
        fb = b["probability"].cast(pl.Float64, strict=False)
        diff = (fa - fb).abs()
        res["max_probability_diff"] = float(diff.max()) if k else 0.0
        res["probability_mismatches"] = int((diff > tol).fill_null(True).sum())
        cols = [c for c in ref.columns if c not in ("probability", "prediction")]
        bad_cols = []
        for c in cols:
            if c not in b.columns:
                bad_cols.append(f"{c} (missing)")
            elif not a[c].fill_null("").equals(b[c].fill_null("")):
                bad_cols.append(c)
        res["column_mismatches"] = bad_cols
        if res["prediction_mismatches"]:
            problems.append(f"{res['prediction_mismatches']} predictions differ")
        if res["probability_mismatches"]:
            problems.append(f"{res['probability_mismatches']} probabilities differ by more than {tol}")
        if bad_cols:
            problems.append(f"columns differ: {bad_cols}")
    if not res["rows_match"]:
        problems.append(f"row count {res['rows']} != {ref_rows}")
    res["problems"] = problems
    res["ok"] = not problems
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, help="reference output (ours)")
    p.add_argument("--rows", type=int, default=10000, help="rows compared column by column (default 10000)")
    p.add_argument("--tol", type=float, default=1e-9)
    p.add_argument("--json", action="store_true")
    p.add_argument("others", nargs="+")
    a = p.parse_args(argv)
    ref = head(a.ref, a.rows)
    ref_rows = count_rows(a.ref)
    ok = True
    for path in a.others:
        r = compare(ref, ref_rows, path, a.rows, a.tol)
        ok &= r["ok"]
        if a.json:
            print(json.dumps(r))
        else:
            status = "OK " if r["ok"] else "BAD"
            print(f"{status} {path}: rows {r['rows']} (ref {ref_rows}), first {r['checked']} compared; "
                  + ("; ".join(r["problems"]) or "agree"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
