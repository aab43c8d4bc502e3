"""Baseline: the model behind Flask, served by gunicorn (2 sync workers).

    BENCH_MODEL=data/model.json gunicorn -w 2 -b 127.0.0.1:8081 \
        --chdir bench/baselines flask_app:app

Same contract as our server:
  POST /predict {"flights": [{"OPERA": .., "TIPOVUELO": .., "MES": ..}]}
       -> 200 {"predict": [0|1, ...]}, 400 {"detail": "..."} naming a bad field;
  GET /health -> {"status": "OK"}; GET /ready -> 200 once the model is loaded.
Scoring is plain Python over the artifact's dictionaries (no per-request
DataFrame), the fastest idiomatic way to do it in Flask, so the comparison is
against a fair baseline rather than the slowest one.
"""
from __future__ import annotations

from flask import Flask, jsonify, request

import artifact

MODEL = artifact.load()  # BENCH_MODEL, default data/model.json
app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(status="OK")


@app.get("/ready")
def ready():
    return jsonify(status="ready", model_version=MODEL.version)


@app.post("/predict")
def predict():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("flights"), list):
        return jsonify(detail='body must be {"flights": [...]}'), 400
    out = []
    for i, flight in enumerate(body["flights"]):
        if not isinstance(flight, dict):
            return jsonify(detail=f"flights[{i}]: not an object"), 400
        try:
            _, pred = MODEL.score(flight)
        except ValueError as e:
            return jsonify(detail=f"flights[{i}].{e}"), 400
        out.append(pred)
    return jsonify(predict=out)
