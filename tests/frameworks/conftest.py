"""The entroll server the frameworks' clients run against: the `entroll` binary (ENTROLL_BIN,
default target/release/entroll) on the default model, SmolLM2-135M-Instruct, and its tokenizer as
the safetensors directory scripts/learner-env writes (the renderers read the chat template and
the special tokens there; nothing downloads here)."""

import os
import subprocess
import sys

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "docker", "learner"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from entroll_learner.client import served  # noqa: E402


class Server:
    """A running server: its base URL, the name it serves its model under, the model's file and
    the tokenizer directory of that model."""

    def __init__(self, url, model_path):
        self.url = url
        self.model_path = model_path
        self.model = requests.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
        self.tokenizer = os.path.join(os.path.dirname(model_path), "SmolLM2-135M-Instruct-hf")
        assert os.path.isdir(self.tokenizer), f"{self.tokenizer} is missing: run scripts/learner-env"

    def post(self, path, body=None, **params):
        """POST `body` to `path`, expecting 200; the JSON answer."""
        r = requests.post(f"{self.url}{path}", json=body, params=params, timeout=600)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def get(self, path):
        """GET `path`, expecting 200; the JSON answer."""
        r = requests.get(f"{self.url}{path}", timeout=60)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        return r.json()

    def metric(self, name):
        """The value of the `/metrics` sample named exactly `name`, or 0."""
        for line in requests.get(f"{self.url}/metrics", timeout=30).text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == name:
                return float(value)
        return 0.0


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("ENTROLL_BIN", os.path.join(ROOT, "target", "release", "entroll"))
    assert os.path.exists(binary), f"{binary} is missing: build entroll first (scripts/test does)"
    model = subprocess.run([binary, "fetch-model"], check=True, capture_output=True, text=True).stdout.strip()
    with served(binary, "--model", model, "--max-running-sequences", "4") as url:
        yield Server(url, model)
