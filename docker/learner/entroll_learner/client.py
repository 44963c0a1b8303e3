"""A small client for entroll's HTTP API (`docs/api.md`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests


class EntrollError(RuntimeError):
    """An error answer: `{error, error_type}` and the HTTP status."""

    def __init__(self, status: int, error: str, error_type: str):
        super().__init__(f"{status} {error_type}: {error}")
        self.status, self.error, self.error_type = status, error, error_type


@dataclass
class Entroll:
    """One entroll server."""

    url: str
    timeout_s: float = 3600.0

    def _call(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        # 429 means "full, retry": honour Retry-After instead of failing the training step.
        while True:
            resp = requests.request(method, self.url + path, json=body, timeout=self.timeout_s)
            if resp.status_code == 429:
                time.sleep(float(resp.headers.get("Retry-After", "1")))
                continue
            data = resp.json()
            if resp.status_code != 200:
                raise EntrollError(resp.status_code, data.get("error", ""), data.get("error_type", ""))
            return data

    def wait_ready(self, within_s: float = 300.0) -> None:
        """Waits until GET /health answers 200."""
        deadline = time.time() + within_s
        while True:
            try:
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
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

    def load_weights(self, path: str, version: int) -> dict[str, Any]:
        """POST /weights: serve the checkpoint at `path` (on the server's filesystem) as `version`."""
        return self._call("POST", "/weights", {"path": path, "version": version})
