"""Reads our model artifact (format "scorer-logreg/1", data/model.json) for the baselines.

Every baseline scores with the coefficients of the same artifact, so their outputs
can be compared with ours row by row:

    logit = intercept
          + sum over categorical features of weights[str(value)]
          + sum over numeric features of weight * (x - mean) / std   (missing x -> 0)
    probability = 1 / (1 + exp(-logit)); prediction = 1 if probability >= threshold

A categorical value that is not a key of its feature's weights rejects the row.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

FORMAT = "scorer-logreg/1"


@dataclass(frozen=True)
class Categorical:
    name: str
    weights: dict[str, float]


@dataclass(frozen=True)
class Numeric:
    name: str
    mean: float
    std: float
    weight: float


@dataclass(frozen=True)
class Artifact:
    name: str
    intercept: float
    threshold: float
    categorical: list[Categorical]
    numeric: list[Numeric]
    version: str

    # -- one flight at a time (the HTTP baselines) -------------------------------
    def score(self, flight: dict) -> tuple[float, int]:
        """Probability and 0/1 prediction of one flight; ValueError names a bad field."""
        logit = self.intercept
        for f in self.categorical:
            key = category_key(flight.get(f.name))
            w = f.weights.get(key) if key is not None else None
            if w is None:
                raise ValueError(f"{f.name}: unknown value {flight.get(f.name)!r}")
            logit += w
        for f in self.numeric:
            x = flight.get(f.name)
            if x is None:
                continue
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ValueError(f"{f.name}: not a number: {x!r}")
            logit += f.weight * (float(x) - f.mean) / f.std
        p = sigmoid(logit)
        return p, int(p >= self.threshold)


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def category_key(v) -> str | None:
    """JSON value -> weights key: strings as they are, integers as decimal strings."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return None


def default_model_path() -> Path:
    env = os.environ.get("BENCH_MODEL")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data" / "model.json"


def load(path: str | os.PathLike | None = None) -> Artifact:
    p = Path(path) if path is not None else default_model_path()
    raw = p.read_bytes()
    doc = json.loads(raw)
    if doc.get("format") != FORMAT:
        raise ValueError(f"{p}: format {doc.get('format')!r}, expected {FORMAT!r}")
    cats, nums = [], []
    for f in doc["features"]:
        kind = f.get("kind")
        if kind == "categorical":
            cats.append(Categorical(f["name"], {str(k): float(v) for k, v in f["weights"].items()}))
        elif kind == "numeric":
            std = float(f.get("std") or 1.0)
            nums.append(Numeric(f["name"], float(f.get("mean", 0.0)), std if std != 0 else 1.0, float(f["weight"])))
        else:
            raise ValueError(f"{p}: feature {f.get('name')!r} has unknown kind {kind!r}")
    return Artifact(
        name=str(doc.get("name", p.stem)),
        intercept=float(doc["intercept"]),
        threshold=float(doc.get("threshold", 0.5)),
        categorical=cats,
        numeric=nums,
        version=hashlib.sha256(raw).hexdigest()[:12],
    )
