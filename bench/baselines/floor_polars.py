#!/usr/bin/env python3
"""The floor: what reading and writing the file costs with no model at all.

    floor_polars.py rewrite INPUT.csv OUT.csv   # scan_csv -> sink_csv, every column as a string
    floor_polars.py count INPUT.csv             # parse-only: prints the row count

Both use polars' streaming engine with the same reader settings as
polars_py.py, so the difference between them and a scorer is the model's cost.
"""
from __future__ import annotations

import argparse
import sys

import polars as pl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rewrite", help="read INPUT and write it unchanged to OUT")
    r.add_argument("input")
    r.add_argument("out")
    c = sub.add_parser("count", help="parse INPUT and print its row count")
    c.add_argument("input")
    a = p.parse_args(argv)
    lf = pl.scan_csv(a.input, infer_schema=False)
    if a.cmd == "rewrite":
        lf.sink_csv(a.out)
    else:
        print(lf.select(pl.len()).collect(engine="streaming").item())
    return 0


if __name__ == "__main__":
    sys.exit(main())
