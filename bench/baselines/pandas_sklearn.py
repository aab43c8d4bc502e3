#!/usr/bin/env python3
"""Baseline: pandas + scikit-learn, the way the earlier attempts scored a file.

    pandas_sklearn.py INPUT.csv --model data/model.json --out OUT.csv

pandas.read_csv the whole file, pd.get_dummies on the categorical features
(OPERA, TIPOVUELO, MES), a LogisticRegression whose coef_/intercept_/classes_ are
set from our artifact (columns aligned to the artifact's levels), predict_proba,
then to_csv with every input column + probability + prediction. Rows with a
categorical value the artifact does not know are dropped (our engine rejects
them too, into its errors file); their count goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import artifact


def as_keys(s: pd.Series) -> pd.Series:
    """Column -> the artifact's string keys (an integer MES 3 -> "3")."""
    if pd.api.types.is_float_dtype(s):
        whole = s.notna() & (s % 1 == 0)
        out = pd.Series(None, index=s.index, dtype=object)
        out[whole] = s[whole].astype("int64").astype(str)
        return out
    return s.astype(str).where(s.notna(), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    art = artifact.load(a.model)

    df = pd.read_csv(a.input)
    t_read = time.perf_counter()

    cat_names = [f.name for f in art.categorical]
    missing = [c for c in cat_names if c not in df.columns]
    if missing:
        print(f"pandas_sklearn: input lacks model columns {missing}", file=sys.stderr)
        return 2
    keys = pd.DataFrame({f.name: as_keys(df[f.name]) for f in art.categorical}, index=df.index)
    ok = np.ones(len(df), dtype=bool)
    for f in art.categorical:
        ok &= keys[f.name].isin(list(f.weights)).to_numpy()
    rejected = int((~ok).sum())
    if rejected:
        df = df[ok]
        keys = keys[ok]

    # One-hot columns in the artifact's order; levels absent from the file are 0.
    columns = [f"{f.name}_{level}" for f in art.categorical for level in f.weights]
    coef = [w for f in art.categorical for w in f.weights.values()]
    X = pd.get_dummies(keys, columns=cat_names, prefix=cat_names, prefix_sep="_", dtype=np.float64)
    X = X.reindex(columns=columns, fill_value=0.0)
    for f in art.numeric:
        if f.name in df.columns:
            z = (pd.to_numeric(df[f.name], errors="coerce") - f.mean) / f.std
            X[f.name] = z.fillna(0.0).to_numpy()
        else:
            X[f.name] = 0.0
        coef.append(f.weight)

    clf = LogisticRegression()
    clf.classes_ = np.array([0, 1])
    clf.coef_ = np.array([coef], dtype=np.float64)
    clf.intercept_ = np.array([art.intercept], dtype=np.float64)
    clf.n_features_in_ = X.shape[1]
    proba = clf.predict_proba(X.to_numpy(dtype=np.float64))[:, 1] if len(X) else np.empty(0)
    t_score = time.perf_counter()

    out = df.assign(probability=proba, prediction=(proba >= art.threshold).astype(np.int64))
    out.to_csv(a.out, index=False)
    t_write = time.perf_counter()
    print(
        f"pandas_sklearn: rows={len(out)} rejected={rejected} read={t_read - t0:.2f}s "
        f"score={t_score - t_read:.2f}s write={t_write - t_score:.2f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
