"""Weights versions across entroll replicas: waiting until every replica serves a version
(on-policy), and dropping rollouts older than a staleness bound (off-policy)."""

from __future__ import annotations

import time
from typing import Any, Protocol


class Server(Protocol):
    """What is needed of a server: its `/info`."""

    def info(self) -> dict[str, Any]: ...


def wait_for_version(servers: list[Server], version: int, within_s: float = 600.0, every_s: float = 0.2) -> float:
    """Waits until every server serves `version` or a later one; returns the seconds waited.
    Raises TimeoutError naming the servers still behind."""
    started = time.time()
    while True:
        behind = [s for s in servers if s.info()["weights_version"] < version]
        if not behind:
            return time.time() - started
        if time.time() - started > within_s:
            raise TimeoutError(f"{len(behind)} of {len(servers)} replicas still serve a version below {version} after {within_s} s")
        time.sleep(every_s)


def staleness(rollout: dict[str, Any], version: int) -> int:
    """How many versions behind `version` a rollout ran (a request never mixes versions: every
    sample reports the response's `weights_version`)."""
    return version - rollout["weights_version"]


def fresh_enough(rollout: dict[str, Any], version: int, max_staleness: int) -> bool:
    """Whether a rollout may train the policy at `version` when at most `max_staleness`
    versions of lag are accepted; a sample that disagrees with its response is an error."""
    for group in rollout["groups"]:
        for sample in group["samples"]:
            if sample["weights_version"] != rollout["weights_version"]:
                raise ValueError(f"group {group['id']}: a sample of version {sample['weights_version']} in a response of version {rollout['weights_version']}")
    return 0 <= staleness(rollout, version) <= max_staleness
