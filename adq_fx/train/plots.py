"""Training curves, per-layer bit allocation, weight histograms with codebook levels."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_plots(results: dict[str, Any], snapshots: dict[str, dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for phase, history in results["history"].items():
        if history:
            epochs = [h["epoch"] + 1 for h in history]
            ax.plot(epochs, [h["test_acc"] for h in history], label=f"{phase} test")
            ax.plot(epochs, [h["train_acc"] for h in history], "--", label=f"{phase} train")
    ax.set(xlabel="epoch", ylabel="accuracy %", title="training curves")
    ax.legend()
    paths.append(_save(fig, out / "curves.png"))

    plan = results["bit_plan"]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(plan)), 4))
    ax.bar(range(len(plan)), [b[0] for b in plan.values()])
    ax.set_xticks(range(len(plan)), list(plan), rotation=90, fontsize=7)
    ax.set(
        ylabel="bits (W = A)",
        title=f"bit allocation, mean {results['average_bits']:.3g}, "
        f"parameter-weighted {results['parameter_weighted_bits']:.3g}",
    )
    paths.append(_save(fig, out / "bits.png"))

    layers = list(snapshots["init"])
    fig, axes = plt.subplots(len(layers), 2, figsize=(9, 2.5 * len(layers)), squeeze=False)
    for row, name in enumerate(layers):
        for col, stage in enumerate(("init", "final")):
            snap = snapshots[stage][name]
            ax = axes[row][col]
            ax.hist(snap["weights"], bins=80, color="0.6")
            for level in snap["codebook"]:
                ax.axvline(level, color="C3", linewidth=1)
            ax.set_title(f"{name} ({stage})", fontsize=9)
    paths.append(_save(fig, out / "codebooks.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
