"""Publishing versions for watching replicas, waiting for them, and the staleness bound."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entroll_learner import checkpoints, replicas  # noqa: E402


class Stub:
    """A model and tokenizer that write one file each, checking that the version is not yet
    marked complete while they write."""

    def __init__(self, directory, version):
        self.ready = os.path.join(directory, str(version), checkpoints.READY)

    def save_pretrained(self, path, **_):
        assert not os.path.exists(self.ready), "READY written before the checkpoint"
        os.makedirs(path, exist_ok=True)
        name = "config.json" if not os.path.exists(os.path.join(path, "config.json")) else "tokenizer.json"
        with open(os.path.join(path, name), "w") as f:
            f.write('{"rope_parameters": {"rope_theta": 10000.0}}' if name == "config.json" else "{}")


def test_a_version_is_marked_ready_after_its_files(tmp_path):
    stub = Stub(tmp_path, 3)
    out = checkpoints.publish(stub, stub, str(tmp_path), 3)
    assert out == os.path.join(tmp_path, "3")
    assert sorted(os.listdir(out)) == ["READY", "config.json", "tokenizer.json"]
    assert not os.path.exists(out + ".partial")


class Replica:
    """A replica that moves to `target` after `after` looks at its /info."""

    def __init__(self, start, target, after):
        self.version, self.target, self.after = start, target, after

    def info(self):
        self.after -= 1
        if self.after <= 0:
            self.version = self.target
        return {"weights_version": self.version}


def test_waiting_returns_once_every_replica_serves_the_version():
    fleet = [Replica(1, 2, 1), Replica(1, 2, 4), Replica(1, 3, 2)]
    replicas.wait_for_version(fleet, 2, within_s=5, every_s=0.01)
    assert [r.version for r in fleet] == [2, 2, 3]
    with pytest.raises(TimeoutError, match="1 of 2 replicas"):
        replicas.wait_for_version([Replica(1, 2, 1), Replica(1, 1, 1)], 2, within_s=0.05, every_s=0.01)


def rollout(version, sample_versions):
    return {"weights_version": version, "groups": [{"id": "g", "samples": [{"weights_version": v} for v in sample_versions]}]}


def test_the_staleness_bound():
    assert replicas.fresh_enough(rollout(5, [5, 5]), 5, 0)
    assert not replicas.fresh_enough(rollout(4, [4, 4]), 5, 0)
    assert replicas.fresh_enough(rollout(3, [3]), 5, 2)
    assert not replicas.fresh_enough(rollout(2, [2]), 5, 2)
    with pytest.raises(ValueError, match="a sample of version 4"):
        replicas.fresh_enough(rollout(5, [5, 4]), 5, 3)
