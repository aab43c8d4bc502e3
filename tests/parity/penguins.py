#!/usr/bin/env python3
"""Writes the Palmer penguins table as a CSV for the parity tests.

    penguins.py OUT.csv

The data comes from the installed palmerpenguins package (load_penguins(),
which reads the CSV shipped inside the package: no network). Columns:

    island, sex, bill_length_mm, bill_depth_mm, flipper_length_mm,
    body_mass_g, year, adelie, split

adelie is 1 where species == "Adelie", else 0; a missing value is an empty
field; split is "train" for the rows whose 0-based index i has i % 10 < 7
(242 of the 344 rows) and "test" otherwise. A column of whole numbers
is written as integers (181, 3750), a decimal column with Python's shortest
repr (18.7, 18.0).
"""

import sys

import pandas as pd

COLUMNS = ["island", "sex", "bill_length_mm", "bill_depth_mm",
           "flipper_length_mm", "body_mass_g", "year"]


def load():
    try:
        from palmerpenguins import load_penguins
        return load_penguins()
    except ImportError:
        # palmerpenguins reads its data with pkg_resources (setuptools), which
        # a venv of Python >= 3.12 lacks: read the same packaged file.
        from importlib.resources import files
        with (files("palmerpenguins") / "data" / "penguins.csv").open("rb") as f:
            return pd.read_csv(f)


def main(argv):
    if len(argv) != 2:
        print("usage: penguins.py OUT.csv", file=sys.stderr)
        sys.exit(2)
    penguins = load()
    out = pd.DataFrame(index=penguins.index)
    for c in COLUMNS:
        column = penguins[c]
        if pd.api.types.is_float_dtype(column) and (column.dropna() % 1 == 0).all():
            # integer measurements read as float because of their NaNs
            column = column.astype("Int64")
        out[c] = column.astype("string").fillna("")
    out["adelie"] = (penguins["species"] == "Adelie").astype(int).astype(str)
    index = pd.Series(range(len(penguins)), index=penguins.index)
    out["split"] = (index % 10 < 7).map({True: "train", False: "test"})
    # a sample weight column: 1, 1.5, 2, 1, 1.5, 2, ...
    out["weight"] = (1 + (index % 3) * 0.5).map(str)
    out.to_csv(argv[1], index=False)


if __name__ == "__main__":
    main(sys.argv)
