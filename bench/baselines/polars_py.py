#!/usr/bin/env python3
"""Baseline: Python polars, lazy and streaming.

    polars_py.py INPUT.csv --model data/model.json --out OUT.csv [--format parquet]

pl.scan_csv (every column read as a string, so input columns pass through
untouched) -> one when/then chain per categorical feature mapping each level to
its weight (an unknown level gives null and the row is rejected) -> logit,
probability, prediction -> sink_csv, or sink_parquet (zstd) with --format
parquet (the streaming engine: bounded memory).
Rejected rows are filtered out, like our engine's (which lists them in its
errors file); this script does not count them (that would be a second pass).
"""
from __future__ import annotations

import argparse
import sys
import time

import polars as pl

import artifact


def term(f: artifact.Categorical) -> pl.Expr:
    col = pl.col(f.name)
    chain = None
    for level, w in f.weights.items():
        cond = col == pl.lit(level)
        chain = pl.when(cond).then(pl.lit(w)) if chain is None else chain.when(cond).then(pl.lit(w))
    if chain is None:  # no levels at all: every row is rejected
        return pl.lit(None, dtype=pl.Float64)
    return chain.otherwise(pl.lit(None, dtype=pl.Float64))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    art = artifact.load(a.model)

    if a.input.endswith(".parquet"):
        # The columns as stored; the model's categorical levels are strings.
        lf = pl.scan_parquet(a.input).with_columns(pl.all().cast(pl.String))
    else:
        lf = pl.scan_csv(a.input, infer_schema=False)
    names = lf.collect_schema().names()
    missing = [f.name for f in art.categorical if f.name not in names]
    if missing:
        print(f"polars_py: input lacks model columns {missing}", file=sys.stderr)
        return 2

    tmp = [f"__t{i}" for i in range(len(art.categorical))]
    logit = pl.lit(art.intercept)
    for t in tmp:
        logit = logit + pl.col(t)
    for f in art.numeric:
        if f.name in names:
            z = (pl.col(f.name).cast(pl.Float64, strict=False) - f.mean) / f.std
            logit = logit + (z * f.weight).fill_null(0.0)
    proba = 1.0 / (1.0 + (-logit).exp())

    scored = (
        lf.with_columns([term(f).alias(t) for f, t in zip(art.categorical, tmp)])
        .filter(pl.all_horizontal([pl.col(t).is_not_null() for t in tmp]) if tmp else pl.lit(True))
        .with_columns(proba.alias("probability"))
        .with_columns((pl.col("probability") >= art.threshold).cast(pl.Int64).alias("prediction"))
        .drop(tmp)
    )
    if a.format == "parquet":
        scored.sink_parquet(a.out, compression="zstd")
    else:
        scored.sink_csv(a.out)
    print(f"polars_py: {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
