"""The plain server a user would write instead of ``ftlit serve``: the baseline of ``bench_serve.py``.

    python benchmarks/serve_baseline.py --model runs/bench-int8/export --port 8001

The FastAPI tutorial's shape: one ``transformers.pipeline("text-classification", top_k=None)`` loaded at start-up
and called once per request (no batching across requests), from a sync ``def`` endpoint, so FastAPI runs it in its
threadpool. ``POST /predict`` takes ``{"text": "..."}`` and answers the pipeline's output as JSON (a list holding
one list of every label with its score); ``GET /ready`` answers 200 once the model is loaded (503 before),
``GET /health`` 200 always. Inputs are truncated at 64 tokens, the quickstart's ``data.max_length``.
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

MAX_LENGTH = 64
state: dict[str, Any] = {}


class Request(BaseModel):
    """One input: ``{"text": "..."}``."""

    text: str


def build_app(model: str) -> FastAPI:
    """The app, loading ``model`` (a Hugging Face folder) into a text-classification pipeline at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from transformers import pipeline

        state["classifier"] = pipeline("text-classification", model=model, top_k=None, device="cpu")
        yield
        state.clear()

    app = FastAPI(title="baseline text classifier", lifespan=lifespan)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        if "classifier" not in state:
            raise HTTPException(status_code=503, detail="loading")
        return {"status": "ready"}

    @app.post("/predict")
    def predict(request: Request) -> Any:
        return state["classifier"](request.text, truncation=True, max_length=MAX_LENGTH)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a Hugging Face model folder (e.g. ftlit export's)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    ns = parser.parse_args()
    uvicorn.run(build_app(ns.model), host=ns.host, port=ns.port, log_level="warning")


if __name__ == "__main__":
    main()
