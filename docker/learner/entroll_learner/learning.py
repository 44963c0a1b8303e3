"""The learning demo's figures: one plot and one Markdown table from the runs of
`docker/learning-demo.sh` (Dr.GRPO, SIREN and AER, one or more seeds each).

    python -m entroll_learner.learning OUT --png training.png --table results.md

OUT holds `before.json` (`entroll eval` of the initial policy on the held-out problems) and
`runs/<method>-s<seed>/` with the learner's `steps.jsonl`, `after.json` (the same evaluation of
the trained policy) and `seconds` (the run's wall time).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ["drgrpo", "siren", "aer"]
NAMES = {"drgrpo": "Dr.GRPO", "siren": "SIREN", "aer": "AER"}
COLOURS = {"drgrpo": "tab:gray", "siren": "tab:blue", "aer": "tab:orange"}


def load(out: str) -> tuple[dict, dict[str, list[dict]]]:
    """The evaluation before training, and per method its runs: each run's steps, its
    evaluation after training and its wall time."""
    with open(os.path.join(out, "before.json")) as f:
        before = json.load(f)
    runs: dict[str, list[dict]] = {}
    for d in sorted(glob.glob(os.path.join(out, "runs", "*-s*"))):
        method, seed = os.path.basename(d).rsplit("-s", 1)
        with open(os.path.join(d, "steps.jsonl")) as f:
            steps = [json.loads(line) for line in f if line.strip()]
        with open(os.path.join(d, "after.json")) as f:
            after = json.load(f)
        with open(os.path.join(d, "seconds")) as f:
            seconds = float(f.read())
        runs.setdefault(method, []).append({"seed": int(seed), "steps": steps, "after": after, "seconds": seconds})
    return before, runs


def per_step(runs: list[dict], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps, and per step the mean, lowest and highest of `key` over the runs (steps every
    run reached)."""
    n = min(len(r["steps"]) for r in runs)
    values = [[r["steps"][i][key] for r in runs] for i in range(n)]
    return (
        list(range(1, n + 1)),
        [statistics.fmean(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def smooth(xs: list[float], window: int = 5) -> list[float]:
    """Trailing moving average (shorter at the start)."""
    return [statistics.fmean(xs[max(0, i - window + 1) : i + 1]) for i in range(len(xs))]


def plot(before: dict, runs: dict[str, list[dict]], png: str) -> None:
    """Eight panels: rollout pass rate, token-mean entropy and top-p entropy (5-step means, as
    single steps of a few prompts are noisy), the gradient norm of each term, AER's α, SIREN's
    peak top-p entropy against its anchor, the ratio's drift over a step's updates, held-out
    pass@1 before and after."""
    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    panels = [
        ("pass_rate", "rollout pass rate (5-step mean; band: seeds)"),
        ("entropy_mean", "token-mean entropy, nats (5-step mean)"),
        ("top_p_entropy_mean", "token-mean top-p entropy, nats (5-step mean)"),
    ]
    for ax, (key, title) in zip(axes.flat, panels):
        for method in METHODS:
            if method not in runs:
                continue
            steps, mean, low, high = per_step(runs[method], key)
            mean, low, high = smooth(mean), smooth(low), smooth(high)
            ax.plot(steps, mean, color=COLOURS[method], label=NAMES[method])
            if len(runs[method]) > 1:
                ax.fill_between(steps, low, high, color=COLOURS[method], alpha=0.2)
        ax.set_title(title)
    ax = axes[0, 3]
    for method in METHODS:
        for i, r in enumerate(runs.get(method, [])):
            measured = [s for s in r["steps"] if s["grad_norm_policy"] is not None]
            steps = [s["step"] for s in measured]
            ax.plot(steps, [max(s["grad_norm_policy"], 1e-6) for s in measured], color=COLOURS[method], alpha=0.6, marker=".",
                    label=f"{NAMES[method]}: policy loss" if i == 0 else None)
            if method != "drgrpo":
                ax.plot(steps, [max(s["grad_norm_entropy_term"], 1e-6) for s in measured], color=COLOURS[method], alpha=0.6,
                        marker=".", linestyle="--", label=f"{NAMES[method]}: entropy term" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_title("each term's gradient norm, 1st update (0 at 1e-6)")
    if "aer" in runs:
        ax = axes[1, 0]
        for r in runs["aer"]:
            ax.plot([s["step"] for s in r["steps"]], [s["aer_alpha"] for s in r["steps"]], color=COLOURS["aer"], alpha=0.7)
        ax.set_title("AER: global coefficient α")
        twin = axes[0, 1]
        target = statistics.fmean(r["steps"][0]["aer_target"] for r in runs["aer"])
        twin.axhline(target, color=COLOURS["aer"], linestyle=":", label="AER target ρ·H₀")
    if "siren" in runs:
        ax = axes[1, 1]
        for r in runs["siren"]:
            steps = [s["step"] for s in r["steps"]]
            ax.plot(steps, [s["siren_anchor"] for s in r["steps"]], color=COLOURS["siren"], alpha=0.7)
            ax.axhline(r["steps"][0]["siren_anchor_initial"], color=COLOURS["siren"], linestyle=":")
        ax.set_title("SIREN: peak top-p entropy of the rollouts (dotted: anchor)")
    ax = axes[1, 2]
    for method in METHODS:
        for i, r in enumerate(runs.get(method, [])):
            ax.plot([s["step"] for s in r["steps"]], [s["ratio_drift_max"] for s in r["steps"]], color=COLOURS[method],
                    alpha=0.7, label=NAMES[method] if i == 0 else None)
    ax.set_title("largest mean |ln π_θ − ln π_old| over a step's updates")
    ax = axes[1, 3]
    labels, values, colours = ["initial"], [before["overall"]["pass@1"]], ["black"]
    for method in METHODS:
        for r in runs.get(method, []):
            labels.append(f"{NAMES[method]} s{r['seed']}")
            values.append(r["after"]["overall"]["pass@1"])
            colours.append(COLOURS[method])
    ax.bar(range(len(values)), values, color=colours)
    ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_title(f"held-out pass@1 ({before['overall']['problems']} problems × {before['k']})")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax is not axes[1, 3]:
            ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    names = " vs ".join(NAMES[m] for m in METHODS if m in runs)
    fig.suptitle(f"SmolLM2-135M-Instruct on generated arithmetic: {names} through entroll")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def spread(values: list[float]) -> str:
    """Mean, and the range over seeds when there are several."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def table(before: dict, runs: dict[str, list[dict]]) -> str:
    """The Markdown table: per method, the first and last five steps' rollout statistics and
    the held-out evaluation before and after."""
    k = before["k"]
    head = before["overall"]
    lines = [
        f"| method | seeds | steps | rollout pass rate, steps 1–5 → last 5 | entropy, first → last 5 | top-p entropy, first → last 5 | held-out pass@1 (initial {head['pass@1']:.3f}) | held-out pass@{k} (initial {head[f'pass@{k}']:.3f}) | held-out entropy (initial {head['entropy_mean']:.3f}) | minutes per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        rs = runs.get(method)
        if not rs:
            continue

        def window(key: str, first: bool) -> list[float]:
            return [statistics.fmean(s[key] for s in (r["steps"][:5] if first else r["steps"][-5:])) for r in rs]

        lines.append(
            "| {} | {} | {} | {} → {} | {} → {} | {} → {} | {} | {} | {} | {:.1f} |".format(
                NAMES[method],
                len(rs),
                min(len(r["steps"]) for r in rs),
                spread(window("pass_rate", True)),
                spread(window("pass_rate", False)),
                spread([r["steps"][0]["entropy_mean"] for r in rs]),
                spread(window("entropy_mean", False)),
                spread([r["steps"][0]["top_p_entropy_mean"] for r in rs]),
                spread(window("top_p_entropy_mean", False)),
                spread([r["after"]["overall"]["pass@1"] for r in rs]),
                spread([r["after"]["overall"][f"pass@{k}"] for r in rs]),
                spread([r["after"]["overall"]["entropy_mean"] for r in rs]),
                statistics.fmean(r["seconds"] for r in rs) / 60,
            )
        )
    return "\n".join(lines) + "\n"


def updates_table(runs: dict[str, list[dict]]) -> str:
    """The Markdown table of what each term does to the update: per method, the gradient norms
    of the policy loss and of the entropy term at each step's first update (their median over
    steps, per seed), their ratio, and over all updates the ratio's largest drift and the share
    of tokens the clip acted on."""
    lines = [
        "| run | steps measured | ‖∇ policy loss‖, median | ‖∇ entropy term‖, median | entropy / policy, median (range over steps) | largest mean \\|ln π_θ − ln π_old\\| | clipped tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        for r in runs.get(method, []):
            steps = [s for s in r["steps"] if s["grad_norm_policy"] is not None]
            ratios = [s["grad_norm_entropy_term"] / s["grad_norm_policy"] for s in steps if s["grad_norm_policy"] > 0]
            lines.append(
                "| {} s{} | {} | {:.3g} | {} | {} | {:.3g} | {:.2%} |".format(
                    NAMES[method],
                    r["seed"],
                    len(steps),
                    statistics.median(s["grad_norm_policy"] for s in steps),
                    "–" if method == "drgrpo" else f"{statistics.median(s['grad_norm_entropy_term'] for s in steps):.3g}",
                    "–" if method == "drgrpo" or not ratios else f"{statistics.median(ratios):.3g} ({min(ratios):.2g}–{max(ratios):.2g})",
                    max(s["ratio_drift_max"] for s in r["steps"]),
                    statistics.fmean(s["clip_fraction"] for s in r["steps"]),
                )
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Plot and tabulate the learning demo")
    p.add_argument("out")
    p.add_argument("--png", required=True)
    p.add_argument("--table", required=True)
    args = p.parse_args(argv)
    before, runs = load(args.out)
    if not runs:
        raise SystemExit(f"{args.out}/runs holds no runs")
    plot(before, runs, args.png)
    text = table(before, runs) + "\n" + updates_table(runs)
    with open(args.table, "w") as f:
        f.write(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
