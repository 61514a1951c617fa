"""Start, stop and talk to a real vLLM OpenAI-compatible server on the CPU, for tests.

Standard library only: this module is imported by pytest in the project's own
environment, while the server runs with the interpreter of the separate vLLM
venv that ``.ci/vllm-env.sh`` builds (its path is that script's last stdout line).

Typical use::

    with VLLMServer(venv_python, model_dir, log_path=tmp_path / "vllm.log") as server:
        usage = server.complete("ka lo mi", max_tokens=5)
        text = server.metrics()
        assert sum_samples(text, "vllm:generation_tokens_total") == usage["completion_tokens"]

Only loopback addresses are used.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypedDict

__all__ = [
    "CompletionUsage",
    "VLLMServer",
    "VLLMServerError",
    "fetch_metrics",
    "find_free_port",
    "parse_samples",
    "send_completion",
    "sum_samples",
]

DEFAULT_SERVED_MODEL_NAME = "tiny-llama"
DEFAULT_STARTUP_TIMEOUT_S = 300.0
DEFAULT_STOP_TIMEOUT_S = 30.0
LOOPBACK = "127.0.0.1"


class VLLMServerError(RuntimeError):
    """The server could not be started or stopped; the message carries the log tail."""


class CompletionUsage(TypedDict):
    """The ``usage`` object of an OpenAI completion response."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def find_free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _http(
    method: str,
    url: str,
    body: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """Send one request without any proxy; return (status, body), also for HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    # Loopback only: never route through an HTTP proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def send_completion(
    base_url: str,
    model: str,
    prompt: str | Sequence[int],
    max_tokens: int,
    *,
    ignore_eos: bool = True,
    timeout: float = 120.0,
    extra: Mapping[str, Any] | None = None,
) -> CompletionUsage:
    """``POST /v1/completions`` with greedy sampling; return the response's ``usage``.

    ``ignore_eos`` (a vLLM extension of the OpenAI API) keeps generating past EOS,
    so exactly ``max_tokens`` tokens come back, as long as the context has room.
    ``prompt`` may also be a list of token ids.
    """
    payload: dict[str, Any] = {
        "model": model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": ignore_eos,
    }
    if extra:
        payload.update(extra)
    status, raw = _http("POST", base_url.rstrip("/") + "/v1/completions", payload, timeout)
    if status != 200:
        raise VLLMServerError(f"POST /v1/completions answered {status}: {raw[:2000]!r}")
    response = json.loads(raw)
    usage = response["usage"]
    return CompletionUsage(
        prompt_tokens=int(usage["prompt_tokens"]),
        completion_tokens=int(usage["completion_tokens"]),
        total_tokens=int(usage["total_tokens"]),
    )


def fetch_metrics(base_url: str, timeout: float = 30.0) -> str:
    """Return the text of ``GET /metrics``."""
    status, raw = _http("GET", base_url.rstrip("/") + "/metrics", timeout=timeout)
    if status != 200:
        raise VLLMServerError(f"GET /metrics answered {status}: {raw[:2000]!r}")
    return raw.decode()


_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>.*)\})?"
    r"\s+(?P<value>\S+)(?:\s+\S+)?\s*$"
)
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Return ``(labels, value)`` for each sample called exactly ``name``.

    A small parser for the classic text format, enough for vLLM's output: it
    matches sample names (``vllm:prompt_tokens_total``), not family names.
    """
    samples: list[tuple[dict[str, str], float]] = []
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None or match.group("name") != name:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL_RE.findall(match.group("labels") or "")}
        value = float(match.group("value"))
        samples.append((labels, value))
    return samples


def sum_samples(text: str, name: str, **label_filter: str) -> float:
    """Sum the samples called ``name`` over all labels (optionally filtered by label values).

    Returns NaN when no sample matches, so a missing metric never passes as 0.
    """
    values = [
        value
        for labels, value in parse_samples(text, name)
        if all(labels.get(k) == v for k, v in label_filter.items())
    ]
    return math.fsum(values) if values else math.nan


class VLLMServer:
    """One ``vllm.entrypoints.openai.api_server`` process on a loopback port.

    The server runs in its own session (process group), so ``stop()`` also reaches
    vLLM's engine-core child process. Its stdout and stderr go to ``log_path``.
    """

    def __init__(
        self,
        python: str | os.PathLike[str],
        model_dir: str | os.PathLike[str],
        *,
        served_model_name: str = DEFAULT_SERVED_MODEL_NAME,
        log_path: str | os.PathLike[str] | None = None,
        port: int | None = None,
        host: str = LOOPBACK,
        max_model_len: int = 256,
        dtype: str = "bfloat16",
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.python = str(python)
        self.model_dir = str(Path(model_dir).resolve())
        self.served_model_name = served_model_name
        self.log_path = (
            Path(log_path) if log_path is not None else Path(self.model_dir).parent / "vllm-server.log"
        )
        self.host = host
        self.port = port
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.startup_seconds: float | None = None
        """Wall time of the last successful ``start()``, until ``/health`` answered 200."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- properties -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (valid once a port is chosen)."""
        if self.port is None:
            raise VLLMServerError("the server has no port yet: call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the server (needs ``self.port``)."""
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_dir,
            "--served-model-name",
            self.served_model_name,
            "--max-model-len",
            str(self.max_model_len),
            "--dtype",
            self.dtype,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "VLLM_CPU_KVCACHE_SPACE": "1",
                "PYTHONUNBUFFERED": "1",
                # Loopback only: requests to our own server must not go to a proxy.
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        # The project's own virtualenv must not leak into the vLLM venv's interpreter.
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        env.update(self.extra_env)
        return env

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> str:
        """Start the server and wait until ``GET /health`` answers 200; return its URL."""
        if self.is_running():
            raise VLLMServerError(f"server already running (pid {self.pid}) at {self.url}")
        if not (Path(self.model_dir) / "config.json").is_file():
            raise VLLMServerError(f"{self.model_dir} is not a model directory (no config.json)")
        if self.port is None or not _port_is_free(self.host, self.port):
            self.port = find_free_port(self.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop())
        self._log_file.write(f"\n=== tokenwatt: starting {' '.join(self.command())}\n".encode())
        self._log_file.flush()
        started = time.monotonic()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
        )
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self.url

    def _wait_healthy(self, started: float) -> None:
        deadline = started + self.startup_timeout
        health = self.url + "/health"
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise VLLMServerError(
                    f"vLLM exited with status {code} during start-up; log {self.log_path}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError):  # refused, reset, timeout while it starts
                status, _ = _http("GET", health, timeout=5.0)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise VLLMServerError(
                    f"vLLM not healthy after {self.startup_timeout:.0f} s; log {self.log_path}:\n"
                    + self.log_tail()
                )
            time.sleep(0.5)

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the server; return the API server's exit status (None if none was running).

        SIGTERM goes to the API server, which shuts its engine core down itself; after
        ``timeout`` seconds the whole process group gets SIGKILL, and so do children
        still alive shortly after the API server exited. Safe to call more than once,
        and when the server never started.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            pgid = process.pid  # start_new_session: the group id is the leader's pid
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                code = process.wait(timeout=30)
            deadline = time.monotonic() + 5.0
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        self._close_log()
        return code

    def restart(self, *, new_port: bool = False) -> str:
        """Stop and start again (same port unless ``new_port`` or it is taken); return the URL."""
        self.stop()
        if new_port:
            self.port = None
        return self.start()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- requests -------------------------------------------------------------------

    def complete(
        self,
        prompt: str | Sequence[int],
        max_tokens: int,
        *,
        ignore_eos: bool = True,
        timeout: float = 120.0,
    ) -> CompletionUsage:
        """Send a completion for the served model; return its ``usage``."""
        return send_completion(
            self.url, self.served_model_name, prompt, max_tokens, ignore_eos=ignore_eos, timeout=timeout
        )

    def metrics(self) -> str:
        return fetch_metrics(self.url)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    # python vllm_server.py VENV_PYTHON MODEL_DIR: start, send one request, print metrics.
    server = VLLMServer(sys.argv[1], sys.argv[2])
    with server:
        print(f"up at {server.url} in {server.startup_seconds:.1f} s", file=sys.stderr)
        print(server.complete("hello world", max_tokens=4), file=sys.stderr)
        print(server.metrics())
