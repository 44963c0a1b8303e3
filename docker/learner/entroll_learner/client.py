"""A small client for entroll's HTTP API (`docs/api.md`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import requests


class EntrollError(RuntimeError):
    """An error answer: `{error, error_type}` and the HTTP status."""

    def __init__(self, status: int, error: str, error_type: str):
        super().__init__(f"{status} {error_type}: {error}")
        self.status, self.error, self.error_type = status, error, error_type


@dataclass
class Entroll:
    """One entroll server. Its keys (`docs/security.md`) default to the variables the server
    reads too: `ENTROLL_API_KEY` for sampling, `ENTROLL_ADMIN_KEY` for weight updates."""

    url: str
    timeout_s: float = 3600.0
    api_key: str = field(default_factory=lambda: os.environ.get("ENTROLL_API_KEY", ""), repr=False)
    admin_key: str = field(default_factory=lambda: os.environ.get("ENTROLL_ADMIN_KEY", ""), repr=False)

    def _headers(self, path: str) -> dict[str, str]:
        # Control routes take the admin key only; the others either key.
        key = self.admin_key if path == "/weights" else self.api_key or self.admin_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _send(self, method: str, path: str, body: dict | None = None, stream: bool = False) -> requests.Response:
        # 429 means "full, retry": honour Retry-After instead of failing the training step.
        while True:
            resp = requests.request(
                method, self.url + path, json=body, timeout=self.timeout_s, stream=stream, headers=self._headers(path)
            )
            if resp.status_code == 429:
                time.sleep(float(resp.headers.get("Retry-After", "1")))
                continue
            if resp.status_code != 200:
                data = resp.json()
                raise EntrollError(resp.status_code, data.get("error", ""), data.get("error_type", ""))
            return resp

    def _call(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        return self._send(method, path, body).json()

    def wait_ready(self, within_s: float = 300.0) -> None:
        """Waits until GET /health answers 200."""
        deadline = time.time() + within_s
        while True:
            try:
                if requests.get(self.url + "/health", timeout=5, headers=self._headers("/health")).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"entroll at {self.url} not ready after {within_s} s")
            time.sleep(0.5)

    def info(self) -> dict[str, Any]:
        """GET /info: model, vocabulary, weights version, defaults and limits."""
        return self._call("GET", "/info")

    def rollouts(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST /rollouts."""
        return self._call("POST", "/rollouts", request)

    def stream_rollouts(self, request: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """POST /rollouts with `"stream": true`: yields `("group", group)` as each group's
        samples are done (completion order), then `("summary", line)` with the summary and
        every other field of the whole answer. An error line raises `EntrollError`."""
        with self._send("POST", "/rollouts", dict(request, stream=True), stream=True) as resp:
            for raw in resp.iter_lines():
                if not raw:
                    continue
                line = json.loads(raw)
                if "group" in line:
                    yield "group", line["group"]
                elif "summary" in line:
                    yield "summary", line
                    return
                else:
                    raise EntrollError(200, line.get("error", ""), line.get("error_type", ""))
        raise EntrollError(200, "the stream ended before its summary line", "engine")

    def load_weights(self, path: str, version: int) -> dict[str, Any]:
        """POST /weights: serve the checkpoint at `path` (on the server's filesystem) as `version`."""
        return self._call("POST", "/weights", {"path": path, "version": version})


@contextlib.contextmanager
def served(binary: str, *args: str) -> Iterator[str]:
    """Runs `binary serve --port 0 *args` (an `entroll` binary) and yields its base URL once it
    listens; stops it on the way out. For tests that run the real server beside them."""
    proc = subprocess.Popen([binary, "serve", "--port", "0", *args], stdout=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("entroll listening on "):
                url = line.split()[-1]
                break
        if url is None:
            raise RuntimeError(f"{binary} did not start (exit status {proc.wait()})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
