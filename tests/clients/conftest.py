"""The entroll server the real clients run against: the `entroll` binary (ENTROLL_BIN, default
target/release/entroll) on the default model, SmolLM2-135M-Instruct (fetched by the test command
before these tests run; nothing downloads here)."""

import os
import subprocess
import sys

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "docker", "learner"))

from entroll_learner.client import served  # noqa: E402


class Server:
    """A running server: its base URL and the id it serves its model under."""

    def __init__(self, url):
        self.url = url
        self.model = requests.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]

    def rollouts(self, request):
        """POST /rollouts, expecting 200."""
        r = requests.post(f"{self.url}/rollouts", json=request, timeout=600)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("ENTROLL_BIN", os.path.join(ROOT, "target", "release", "entroll"))
    assert os.path.exists(binary), f"{binary} is missing: build entroll first (scripts/test does)"
    model = subprocess.run([binary, "fetch-model"], check=True, capture_output=True, text=True).stdout.strip()
    with served(binary, "--model", model, "--max-running-sequences", "16") as url:
        yield Server(url)
