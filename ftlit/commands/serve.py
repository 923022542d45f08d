"""``ftlit serve``: a fine-tuned model behind HTTP, on FastAPI + uvicorn (extra ``serve``).

uvicorn gives what a production server needs and ftlit does not rewrite: worker processes, keep-alive, and a
graceful stop (on SIGTERM or Ctrl-C it stops accepting connections, lets in-flight requests finish, then exits 0).
"""

from __future__ import annotations

import json
import os
import signal
from importlib.util import find_spec
from types import FrameType
from typing import Any

from jsonargparse import ArgumentParser
from typing_extensions import override

from ftlit.commands.folders import command_parser
from ftlit.errors import ConfigError, report_errors

# Where worker processes (``--workers`` above 1) read their settings: uvicorn starts them from an import string.
SETTINGS_ENV = "FTLIT_SERVE_SETTINGS"


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_batch_size: int = 32,
    batch_timeout_ms: float = 5.0,
    engine: str = "torch",
    max_body_bytes: int = 1 << 20,
    max_inputs: int = 64,
    max_chars: int = 20_000,
    api_key_env: str | None = None,
    trust_remote_code: bool = False,
    drain_timeout_s: float = 30.0,
) -> None:
    """Serve a fine-tuned model over HTTP: POST /predict answers the rows ftlit predict writes.

    Args:
        model: An ftlit checkpoint, or a folder written by ``ftlit export``.
        host: Address to listen on; loopback unless told otherwise (``0.0.0.0`` in a container).
        port: Port to listen on.
        workers: Server processes, each with its own copy of the model (uvicorn's workers).
        max_batch_size: Most inputs predicted together: requests that arrive together are batched up to this many
            rows; 1 predicts each request alone.
        batch_timeout_ms: How long a batch waits for more requests after its first one, in milliseconds; after a
            batch that held one request alone, the next does not wait (until requests share a batch again).
        engine: ``torch``; or ``onnx`` / ``onnx-int8`` to run the exported folder's ``model.onnx`` /
            ``model.int8.onnx`` on onnxruntime (from ``ftlit export --onnx`` / ``--quantize int8``).
        max_body_bytes: Largest request body; a larger one is answered 413.
        max_inputs: Most inputs in one request; more are answered 413.
        max_chars: Most characters in one text field; more are answered 422. Texts longer than the model's
            ``max_length`` tokens are cut as in training, and the answer lists them under ``truncated``.
        api_key_env: Environment variable holding an API key that every request but /health, /ready and the page
            must send (``X-API-Key: <key>`` or ``Authorization: Bearer <key>``); none: no key.
        trust_remote_code: Let a model that ships its own Python code run it. Off by default.
        drain_timeout_s: On SIGTERM or Ctrl-C, how long in-flight requests get to finish before the server exits.
    """
    settings = check_settings(locals())
    if find_spec("fastapi") is None or find_spec("uvicorn") is None:
        raise ConfigError("serve", "ftlit serve needs FastAPI and uvicorn: pip install 'ftlit[serve]'")
    import uvicorn

    # Loaded here also when workers load their own: a bad model is one line before anything listens.
    app = build(settings)
    options: dict[str, Any] = {"host": host, "port": port, "timeout_graceful_shutdown": drain_timeout_s}
    print(f"ftlit: serving {settings['model']} on http://{host}:{port} (page at /, schema at /docs)", flush=True)
    if workers == 1:
        drained_server()(uvicorn.Config(app, **options)).run()
    else:
        del app
        os.environ[SETTINGS_ENV] = json.dumps(settings)
        uvicorn.run("ftlit.commands.serve:from_environment", factory=True, workers=workers, **options)


def drained_server() -> type:
    """uvicorn's Server, except that a stop by SIGTERM or Ctrl-C, once in-flight requests are answered, ends the
    process with code 0 (uvicorn raises the signal again after its graceful stop, so the process would die by it and
    a supervisor would count a clean stop as a crash)."""
    import uvicorn

    class Server(uvicorn.Server):
        @override
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting for requests
            else:
                self.should_exit = True

    return Server


def check_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings, each bad one refused in one line before the model is loaded."""
    positive = ("workers", "max_batch_size", "max_body_bytes", "max_inputs", "max_chars")
    for name in positive:
        if not isinstance(values[name], int) or values[name] < 1:
            raise ConfigError(name, f"must be a whole number of at least 1, got {values[name]!r}")
    for name in ("batch_timeout_ms", "drain_timeout_s"):
        if not values[name] >= 0:
            raise ConfigError(name, f"must be 0 or more, got {values[name]!r}")
    if not 0 <= values["port"] <= 65535:
        raise ConfigError("port", f"must be in [0, 65535], got {values['port']}")
    if values["engine"] not in ("torch", "onnx", "onnx-int8"):
        raise ConfigError("engine", f"{values['engine']!r} is not an engine: use torch, onnx or onnx-int8")
    settings = dict(values)
    name = settings.pop("api_key_env")
    settings["api_key"] = None
    if name is not None:
        key = os.environ.get(name, "")
        if not key:
            raise ConfigError("api_key_env", f"${name} is not set or empty: export {name}=<key>, or drop the flag")
        settings["api_key"] = key
    return settings


def build(settings: dict[str, Any]) -> Any:
    """The application for ``settings`` (the model loaded)."""
    from ftlit.serve.app import Limits, build_app
    from ftlit.serve.predictor import Predictor

    predictor = Predictor.load(settings["model"], settings["engine"], settings["trust_remote_code"])
    limits = Limits(**{k: settings[k] for k in Limits.__dataclass_fields__})
    return build_app(predictor, limits)


def from_environment() -> Any:
    """The application of a worker process (``--workers`` above 1)."""
    return build(json.loads(os.environ[SETTINGS_ENV]))


def build_parser() -> ArgumentParser:
    return command_parser(serve, "ftlit serve", flags=("trust_remote_code",))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ftlit serve``; bad input exits with one line naming the field (exit code 2)."""
    config = report_errors(lambda: build_parser().parse_args(argv))
    report_errors(lambda: serve(**config.as_dict()))
