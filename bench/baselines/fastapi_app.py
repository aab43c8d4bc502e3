"""Baseline: the model behind FastAPI, served by uvicorn (2 workers).

    BENCH_MODEL=data/model.json uvicorn --workers 2 --host 127.0.0.1 --port 8082 \
        --no-access-log --app-dir bench/baselines fastapi_app:app

Same contract as our server:
  POST /predict {"flights": [{"OPERA": .., "TIPOVUELO": .., "MES": ..}]}
       -> 200 {"predict": [0|1, ...]}, 400 {"detail": "..."} naming a bad field
       (pydantic's validation errors are answered 400 too, not FastAPI's 422);
  GET /health -> {"status": "OK"}; GET /ready -> 200 once the model is loaded.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

import artifact

MODEL = artifact.load()  # BENCH_MODEL, default data/model.json
app = FastAPI(title="scl-flight-delay baseline")


class Flight(BaseModel):
    model_config = ConfigDict(extra="allow")  # numeric features, if the model has any
    OPERA: str
    TIPOVUELO: str
    MES: int


class Flights(BaseModel):
    flights: list[Flight]


@app.exception_handler(RequestValidationError)
async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    where = ".".join(str(p) for p in errs[0]["loc"][1:]) if errs else "body"
    msg = errs[0]["msg"] if errs else "invalid body"
    return JSONResponse(status_code=400, content={"detail": f"{where}: {msg}"})


@app.get("/health")
async def health() -> dict:
    return {"status": "OK"}


@app.get("/ready")
async def ready() -> dict:
    return {"status": "ready", "model_version": MODEL.version}


@app.post("/predict")
async def predict(body: Flights):
    out = []
    for i, flight in enumerate(body.flights):
        try:
            _, pred = MODEL.score(flight.model_dump())
        except ValueError as e:
            return JSONResponse(status_code=400, content={"detail": f"flights[{i}].{e}"})
        out.append(pred)
    return {"predict": out}
