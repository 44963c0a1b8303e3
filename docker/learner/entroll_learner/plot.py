"""Plots a learner log (steps.jsonl): entropy, top-p entropy, pass rate and reward per step.

    python -m entroll_learner.plot OUT/steps.jsonl [more.jsonl ...] --png OUT/training.png
"""

from __future__ import annotations

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PANELS = [
    ("entropy_mean", "token-mean entropy (nats)"),
    ("top_p_entropy_mean", "token-mean top-p entropy (nats)"),
    ("pass_rate", "mean group pass rate"),
    ("reward_mean", "mean reward"),
]


def plot(*logs: str, png: str | None = None) -> str:
    """Draws every log into one figure of four panels; returns the PNG path."""
    if png is None:
        logs, png = logs[:-1], logs[-1]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for log in logs:
        with open(log) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if not rows:
            continue
        label = rows[0]["method"]
        steps = [r["step"] for r in rows]
        for ax, (key, title) in zip(axes.flat, PANELS):
            ax.plot(steps, [r[key] for r in rows], marker="o", label=label)
            ax.set_title(title)
            ax.set_xlabel("step")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("entroll learner: rollout statistics per step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description="Plot learner logs")
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    print(plot(*args.logs, png=args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
