"""The speedup chart: training-step speedups over native/<same variant> eager, a panel per (seq_len, mode)."""
from __future__ import annotations

from pathlib import Path

from .merge import Merged
from .tables import speedups

CHART_XLABEL = "speedup vs native/<same variant> eager"


def write_chart(merged: Merged, path: str | Path) -> None:
    """A PNG with one bar panel per (seq_len, mode) of training steps: speedup over native/<same variant> eager
    of the same run (matplotlib is imported here, only when a chart is asked for)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = speedups(merged)
    if not data:
        raise ValueError("no training-step cell has a speedup to chart (no native eager cell of its variant "
                         "in its run)")
    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 0.45 * max(map(len, data.values())) + 1.8),
                             squeeze=False)
    for ax, ((seq_len, mode), bars) in zip(axes[0], data.items()):
        labels = [label for label, _ in bars][::-1]
        values = [value for _, value in bars][::-1]
        ax.barh(labels, values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlim(0, max(*values, 1.0) * 1.2)  # room for the value labels
        ax.set_title(f"seq_len {seq_len}, {mode}")
        ax.set_xlabel(CHART_XLABEL)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}x", va="center", fontsize=8)
    fig.suptitle(f"Training-step speedups ({merged.gpu})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

