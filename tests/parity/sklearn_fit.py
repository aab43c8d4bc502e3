#!/usr/bin/env python3
"""The scikit-learn side of the logistic regression parity test.

    sklearn_fit.py OPTIONS.json TRAIN.csv SCORE.csv OUT.json

Fits scikit-learn's LogisticRegression on TRAIN.csv the way our Rust fit
(engine/src/model/fit) fits its model: the same training rows, a full one-hot
set per categorical column, numeric columns standardised with the training
mean and population deviation (missing -> 0, the mean), an unpenalised
intercept and the L2 penalty 1/(2C). Then scores every row of SCORE.csv
through the same pipeline and writes the coefficients and probabilities to
OUT.json, for the Rust test to compare with its own.

OPTIONS.json:

    {"target": "y", "categorical": ["a", "b"], "numeric": ["x"],
     "split": null | {"column": "split", "train_value": "train"},
     "c": 1.0, "max_iter": 1000,
     "class_weight": null | "balanced" | {"0": 1.0, "1": 3.5},
     "sample_weight": null | "w",
     "missing_level": false | true,
     "handle_unknown": "error" | "ignore"}

(every key but "target" may be left out: no features, no split, C 1, 1000
iterations, no weights, no missing level, "error").

OUT.json:

    {"intercept": float,
     "categorical": {col: {"levels": {level: weight}, "missing": weight | null}},
     "numeric": {col: {"mean": m, "std": s, "weight": w}},
     "probabilities": [p | null, one per row of SCORE.csv],
     "n_iter": int, "converged": bool, "rows": training rows,
     "class_weights": {"0": w0, "1": w1} | null,
     "sklearn": sklearn.__version__}

Weights are on the standardised scale (coef_ as scikit-learn has it);
"missing" is the weight of the missing level (null when there is none:
missing_level false, or no training row had that column empty).
"class_weights" are the per-class multipliers scikit-learn applied. Note that
since scikit-learn 1.6 'balanced' with a sample weight counts the classes by
their summed sample weights (compute_class_weight(sample_weight=...)), which
is scikit-learn's own behaviour and what this script does.

Rows, as the Rust side reads them (every field is text; an empty field is
missing; header names are trimmed):
- training rows: with a split, those whose split field (trimmed) equals
  train_value; dropped when the target (trimmed) is not exactly "0" or "1",
  when a numeric field is non-empty and not a finite number (Rust's f64
  grammar: no surrounding spaces, no '_'), when the sample weight (trimmed)
  is not a finite number >= 0, when a categorical field is empty and
  missing_level is false, and when the row has the wrong number of fields;
- SCORE.csv rows score to null when scikit-learn cannot score them: a
  numeric field that is not a number, a short row, or (handle_unknown
  "error") a category or a missing value the encoder did not see in
  training. With handle_unknown "ignore" those contribute nothing (an
  all-zero one-hot), as scikit-learn's OneHotEncoder does.

A fit that does not converge is a warning on stderr, not a failure (exit 0);
bad options or files exit 2 with a message.
"""

import json
import re
import sys
import warnings

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# The missing level as an explicit category: no real field holds a NUL.
MISSING = "\x00missing"
# What Rust's `str::parse::<f64>` accepts as a decimal (its inf/nan spellings
# are not finite, so they are rejected either way).
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
KNOWN_OPTIONS = {
    "target", "categorical", "numeric", "split", "c", "max_iter",
    "class_weight", "sample_weight", "missing_level", "handle_unknown",
}


def fail(message):
    print(f"sklearn_fit.py: {message}", file=sys.stderr)
    sys.exit(2)


def read_csv(path):
    """Every field as text, nothing read as NaN; a short row's absent fields
    are NaN (the row is then unusable), a long row is dropped."""
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=True,
            na_values=[], on_bad_lines="skip",
        )
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def parse_numbers(column):
    """(values, ok): finite numbers as float, missing (empty) as NaN;
    ok is False where the field is neither."""
    text = column.fillna("")
    empty = text == ""
    matches = text.str.fullmatch(NUMBER)
    values = pd.to_numeric(text.where(matches & ~empty), errors="coerce").astype(float)
    finite = np.isfinite(values.to_numpy())
    ok = empty.to_numpy() | (matches.to_numpy() & finite)
    values = values.where(pd.Series(finite, index=values.index))
    return values.to_numpy(dtype=float), ok


def load_options(path):
    try:
        with open(path, encoding="utf-8") as f:
            options = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")
    if not isinstance(options, dict) or not isinstance(options.get("target"), str):
        fail(f"{path}: expected an object with a \"target\" column name")
    unknown = set(options) - KNOWN_OPTIONS
    if unknown:
        fail(f"{path}: unknown options {sorted(unknown)}")
    o = {
        "target": options["target"],
        "categorical": list(options.get("categorical") or []),
        "numeric": list(options.get("numeric") or []),
        "split": options.get("split"),
        "c": float(options.get("c", 1.0)),
        "max_iter": int(options.get("max_iter", 1000)),
        "class_weight": options.get("class_weight"),
        "sample_weight": options.get("sample_weight"),
        "missing_level": bool(options.get("missing_level", False)),
        "handle_unknown": options.get("handle_unknown", "error"),
    }
    if o["handle_unknown"] not in ("error", "ignore"):
        fail(f"handle_unknown {o['handle_unknown']!r} is not \"error\" or \"ignore\"")
    if not (np.isfinite(o["c"]) and o["c"] > 0):
        fail(f"c {o['c']} is not a positive number")
    split = o["split"]
    if split is not None and not (
        isinstance(split, dict) and isinstance(split.get("column"), str)
        and isinstance(split.get("train_value"), str)
    ):
        fail("split is not null or {\"column\": ..., \"train_value\": ...}")
    cw = o["class_weight"]
    if isinstance(cw, dict):
        weights = {}
        for key, value in cw.items():
            if str(key).strip() not in ("0", "1"):
                fail(f"class_weight key {key!r} is not \"0\" or \"1\"")
            weights[int(str(key).strip())] = float(value)
        # a class left out weighs 1, as on the Rust side
        o["class_weight"] = {0: weights.get(0, 1.0), 1: weights.get(1, 1.0)}
    elif cw not in (None, "balanced"):
        fail(f"class_weight {cw!r} is not null, \"balanced\" or {{\"0\": w0, \"1\": w1}}")
    return o


def main(argv):
    if len(argv) != 5:
        fail("usage: sklearn_fit.py OPTIONS.json TRAIN.csv SCORE.csv OUT.json")
    _, options_path, train_path, score_path, out_path = argv
    o = load_options(options_path)
    cat, num = o["categorical"], o["numeric"]

    train = read_csv(train_path)
    wanted = [o["target"], *cat, *num]
    if o["split"] is not None:
        wanted.append(o["split"]["column"])
    if o["sample_weight"] is not None:
        wanted.append(o["sample_weight"])
    absent = [c for c in wanted if c not in train.columns]
    if absent:
        fail(f"{train_path} has no column(s) {absent} (it has {list(train.columns)})")

    # Which rows train.
    keep = ~train[wanted].isna().any(axis=1).to_numpy()  # short rows
    if o["split"] is not None:
        split = train[o["split"]["column"]].fillna("").str.strip()
        keep &= (split == o["split"]["train_value"]).to_numpy()
    label = train[o["target"]].fillna("").str.strip()
    keep &= label.isin(["0", "1"]).to_numpy()
    numbers = {}
    for c in num:
        values, ok = parse_numbers(train[c])
        numbers[c] = values
        keep &= ok
    if not o["missing_level"]:
        for c in cat:
            keep &= (train[c].fillna("") != "").to_numpy()
    weight = None
    if o["sample_weight"] is not None:
        text = train[o["sample_weight"]].fillna("").str.strip()
        matches = text.str.fullmatch(NUMBER).to_numpy()
        weight = pd.to_numeric(text.where(matches), errors="coerce").to_numpy(dtype=float)
        keep &= matches & np.isfinite(weight) & (weight >= 0)

    n = int(keep.sum())
    if n == 0:
        fail(f"{train_path}: no usable training rows")
    X = pd.DataFrame(index=range(n))
    for c in cat:
        X[c] = train[c].to_numpy(dtype=object)[keep]
        X.loc[X[c] == "", c] = MISSING
    for c in num:
        X[c] = numbers[c][keep]
    y = label.to_numpy()[keep].astype(int)
    if len(np.unique(y)) < 2:
        fail(f"{train_path}: the training rows hold only class {y[0]}")
    sw = weight[keep] if weight is not None else None

    transformers = []
    if cat:
        transformers.append((
            "cat",
            OneHotEncoder(drop=None, handle_unknown=o["handle_unknown"], sparse_output=False),
            cat,
        ))
    if num:
        transformers.append((
            "num",
            Pipeline([
                ("scale", StandardScaler()),
                ("impute", SimpleImputer(strategy="constant", fill_value=0.0,
                                         keep_empty_features=True)),
            ]),
            num,
        ))
    if not transformers:
        fail("no categorical and no numeric features")
    encode = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    model = LogisticRegression(
        C=o["c"], solver="newton-cholesky", max_iter=max(o["max_iter"], 10000), tol=1e-12,
        class_weight=o["class_weight"],
    )
    pipeline = Pipeline([("encode", encode), ("model", model)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        # an all-missing numeric column: its statistics are nan (reported as
        # mean 0, std 1 below, as on the Rust side), its values all 0
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        pipeline.fit(X, y, model__sample_weight=sw)
    n_iter = int(np.max(model.n_iter_))
    not_converged = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    converged = not not_converged and n_iter < model.max_iter
    if not converged:
        reason = str(not_converged[0].message).splitlines()[0] if not_converged else ""
        print(f"sklearn_fit.py: warning: newton-cholesky did not converge in {n_iter} iterations "
              f"(tol 1e-12): {reason}", file=sys.stderr)

    # The weights, by column.
    coef = model.coef_[0]
    at = 0
    categorical = {}
    if cat:
        encoder = encode.named_transformers_["cat"]
        for c, levels in zip(cat, encoder.categories_):
            weights, missing = {}, None
            for level in levels:
                if level == MISSING:
                    missing = float(coef[at])
                else:
                    weights[str(level)] = float(coef[at])
                at += 1
            categorical[c] = {"levels": weights, "missing": missing}
    numeric = {}
    if num:
        scaler = encode.named_transformers_["num"].named_steps["scale"]
        for j, c in enumerate(num):
            mean, std = float(scaler.mean_[j]), float(scaler.scale_[j])
            if not (np.isfinite(mean) and np.isfinite(std)):
                mean, std = 0.0, 1.0
            numeric[c] = {"mean": mean, "std": std, "weight": float(coef[at])}
            at += 1
    assert at == len(coef), (at, len(coef))

    class_weights = None
    if o["class_weight"] is not None:
        # what scikit-learn multiplied each class's sample weights by
        from sklearn.utils.class_weight import compute_class_weight
        cw = compute_class_weight(o["class_weight"], classes=np.array([0, 1]), y=y,
                                  sample_weight=sw)
        class_weights = {"0": float(cw[0]), "1": float(cw[1])}

    # Scoring.
    score = read_csv(score_path)
    absent = [c for c in [*cat, *num] if c not in score.columns]
    if absent:
        fail(f"{score_path} has no column(s) {absent} (it has {list(score.columns)})")
    m = len(score)
    ok = np.ones(m, dtype=bool)
    S = pd.DataFrame(index=range(m))
    for c, levels in zip(cat, encode.named_transformers_["cat"].categories_ if cat else []):
        raw = score[c]
        ok &= ~raw.isna().to_numpy()
        values = raw.fillna("").to_numpy(dtype=object)
        values[values == ""] = MISSING
        if o["handle_unknown"] == "error":
            ok &= np.isin(values, np.asarray(levels, dtype=object))
        S[c] = values
    for c in num:
        values, fine = parse_numbers(score[c])
        ok &= fine & ~score[c].isna().to_numpy()
        S[c] = values
    probabilities = [None] * m
    if ok.any():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            p = pipeline.predict_proba(S.loc[ok].reset_index(drop=True))[:, 1]
        for i, value in zip(np.flatnonzero(ok), p):
            probabilities[i] = float(value)

    out = {
        "intercept": float(model.intercept_[0]),
        "categorical": categorical,
        "numeric": numeric,
        "probabilities": probabilities,
        "n_iter": n_iter,
        "converged": bool(converged),
        "rows": n,
        "class_weights": class_weights,
        "sklearn": sklearn.__version__,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, allow_nan=False, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
