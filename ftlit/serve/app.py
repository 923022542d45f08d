"""The HTTP application: ``POST /predict``, ``GET /health``, ``GET /ready``, ``GET /info``, ``GET /`` (a page to try
the model) and the OpenAPI schema at ``/openapi.json`` (``/docs`` renders it).

Every error is a JSON ``{"error", "field"}`` with a 4xx status (a bug in ftlit is the only 500), and the server goes
on serving. Limits on the body, the inputs per request and the characters per text are checked before any work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ftlit.commands import explain as explanations
from ftlit.errors import ConfigError
from ftlit.serve import schemas
from ftlit.serve.batching import Batcher
from ftlit.serve.page import PAGE
from ftlit.serve.predictor import Predictor, finite

# Requests that need no API key: the probes of a load balancer, and the page (static; it sends the key itself).
OPEN_PATHS = ("/health", "/ready", "/")


@dataclass(frozen=True)
class Limits:
    """What one server accepts, and how it batches."""

    max_batch_size: int = 32
    batch_timeout_ms: float = 5.0
    max_body_bytes: int = 1 << 20
    max_inputs: int = 64
    max_chars: int = 20_000
    api_key: str | None = None


class Refused(Exception):  # noqa: N818 - an answer, not a failure
    """A request answered with a 4xx and its one-line reason."""

    def __init__(self, status: int, field: str | None, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.status, self.field = status, field


def problem(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def validation_problem(err: ValidationError | RequestValidationError) -> JSONResponse:
    """A pydantic error as one line: its first problem, at its dotted location (``inputs.3.text``)."""
    errors = err.errors()
    # A misspelt field reads better as itself than as the missing field it was meant to be.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    where = ".".join(str(p) for p in first["loc"] if p != "body") or None
    what = first["msg"]
    if first["type"] == "extra_forbidden":
        what = "no such field: check the spelling (GET /info lists the fields)"
    return problem(422, f"{where}: {what}" if where else what, where)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (whatever Content-Length claims)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(413, "body", f"{declared} bytes, more than the server's limit of {limit} (--max_body_bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "body", f"more than the server's limit of {limit} bytes (--max_body_bytes)")
    return bytes(body)


def build_app(predictor: Predictor, limits: Limits) -> FastAPI:
    """The application serving ``predictor`` within ``limits``."""
    task = predictor.task
    fields = predictor.input_fields
    one = schemas.input_model(fields, limits.max_chars)
    many = schemas.batch_model(one, limits.max_inputs)
    answer = schemas.response_model(task)
    batcher = Batcher(predictor.predict, limits.max_batch_size, limits.batch_timeout_ms)
    # Word attributions (extra explain): a sequence or token classifier on the PyTorch engine.
    explains = predictor.engine == "torch" and explanations.can_explain(predictor.module)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        app.state.ready = True
        yield
        app.state.ready = False
        await batcher.stop()

    app = FastAPI(
        title=f"ftlit: {task}",
        description=f"{predictor.task} model {predictor.source} (engine {predictor.engine}), served by ftlit.",
        lifespan=lifespan,
        responses={
            400: {"model": schemas.Problem},
            401: {"model": schemas.Problem},
            413: {"model": schemas.Problem},
            422: {"model": schemas.Problem},
        },  # fmt: skip
    )
    app.state.ready = False
    app.state.batcher = batcher

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if limits.api_key is not None and request.url.path not in OPEN_PATHS:
            auth = request.headers.get("authorization", "")
            given = request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
            if not hmac.compare_digest(given.encode(), limits.api_key.encode()):
                return problem(401, "api key: missing or wrong: send it in the X-API-Key header", "api_key")
        return await call_next(request)

    @app.exception_handler(Refused)
    async def refused(request: Request, err: Refused) -> JSONResponse:
        return problem(err.status, str(err), err.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return validation_problem(err)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return problem(err.status_code, str(err.detail))

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: the model is loaded and requests are taken (503 otherwise)")
    async def ready() -> JSONResponse:
        if not app.state.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "batches": batcher.batches, "waiting": batcher.waiting})

    @app.get("/info", summary="The model: task, input fields, labels, max_length and limits")
    async def info() -> dict[str, Any]:
        return {
            "task": task,
            "model": predictor.source,
            "engine": predictor.engine,
            "inputs": fields,
            "labels": predictor.labels,
            "max_length": predictor.max_length,
            "limits": {k: v for k, v in limits.__dict__.items() if k != "api_key"},
            "api_key": limits.api_key is not None,
            "explain": explains,
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    request_schema = {"anyOf": [one.model_json_schema(), many.model_json_schema()]}

    @app.post(
        "/predict",
        summary=f"Predict: one input or {{'inputs': [...]}} (at most {limits.max_inputs})",
        response_model=answer,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}},
    )
    async def predict(request: Request) -> JSONResponse:
        body = await read_body(request, limits.max_body_bytes)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise Refused(400, "body", f"not valid JSON ({err}): send an input object or {{'inputs': [...]}}") from None
        if isinstance(data, dict) and "inputs" in data:
            inputs = data["inputs"]
            if isinstance(inputs, list) and len(inputs) > limits.max_inputs:
                raise Refused(413, "inputs", f"{len(inputs)} inputs, more than {limits.max_inputs} per request "
                              "(--max_inputs): send them in several requests")  # fmt: skip
            try:
                rows = [r.model_dump() for r in many.model_validate(data).inputs]  # type: ignore[attr-defined]
            except ValidationError as err:
                return validation_problem(err)
        elif isinstance(data, dict):
            try:
                rows = [one.model_validate(data).model_dump()]
            except ValidationError as err:
                return validation_problem(err)
        else:
            raise Refused(422, "body", f"a JSON {type(data).__name__}: send one input object or {{'inputs': [...]}}")
        for i, row in enumerate(rows):
            # A question without an id gets its place in the request, as ftlit predict gives its row number.
            for name, required in fields.items():
                if not required and row.get(name) is None:
                    row[name] = str(i)
        try:
            predictor.check(rows)
        except ConfigError as err:
            # Named by the request's field (the data module names its setting: data.text_column -> text).
            column = getattr(predictor.datamodule, err.field.removeprefix("data."), None)
            raise Refused(422, column if isinstance(column, str) else err.field, str(err).split(": ", 1)[1]) from None
        predictions = await batcher.submit(rows)
        return JSONResponse(finite({"predictions": predictions, "truncated": predictor.truncated(rows)}))

    @app.post("/explain", summary="Which words made the model decide: integrated gradients over one input")
    async def explain(request: Request) -> JSONResponse:
        if not explains:
            raise Refused(404, None, "explanations need a sequence or token classifier on the torch engine and the "
                          "explain extra (pip install 'ftlit[explain]')")  # fmt: skip
        body = await read_body(request, limits.max_body_bytes)
        try:
            row = one.model_validate_json(body).model_dump()
        except ValidationError as err:
            return validation_problem(err)
        texts = [row[name] for name in fields]
        item = explanations.Input(texts[0], texts[1] if len(texts) > 1 else None, next(iter(fields)), "")
        tokenizer = predictor.datamodule.tokenizer
        loop = asyncio.get_running_loop()
        try:
            # On the batcher's thread: the model runs one thing at a time.
            entries = await loop.run_in_executor(
                batcher.executor, lambda: explanations.attribute(predictor.module, tokenizer, [item])
            )
        except ConfigError as err:
            raise Refused(422, err.field, str(err).split(": ", 1)[1]) from None
        return JSONResponse(finite({"explanations": entries}))

    return app
