"""Deterministic figure output: Agg backend, matplotlib's default style (not the user's rc file),
fixed colours per category, and PDF/PNG metadata without timestamps — so the same tables give the
same bytes on every run."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from cotbench.tasks.base import GROUPS  # noqa: E402

_PALETTE = sns.color_palette("colorblind", 10)
GROUP_COLORS = {g: _PALETTE[i] for i, g in enumerate(GROUPS)}
GROUP_LABELS = {"commonsense": "Commonsense", "knowledge": "Knowledge", "soft_reasoning": "Soft reasoning",
                "symbolic": "Symbolic", "mathematical": "Mathematical"}
SETTING_COLORS = {"fs_direct": _PALETTE[7], "fs_cot": _PALETTE[0], "plan_direct": _PALETTE[1],
                  "plan_cot": _PALETTE[2], "plan_tool": _PALETTE[4]}
RC = {"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True,
      "svg.hashsalt": "cotbench", "figure.dpi": 100}


def group_color(g: str):
    return GROUP_COLORS.get(g, _PALETTE[8])


def group_label(g: str) -> str:
    return GROUP_LABELS.get(g, g)


@contextmanager
def figure_style():
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        yield


def save(fig, out_dir: Path, stem: str, formats=("png", "pdf")) -> list[Path]:
    """Write ``stem.<fmt>`` for each format with timestamp-free metadata; closes the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out_dir / f"{stem}.{fmt}"
        meta = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None},
                "svg": {"Date": None}}.get(fmt, {})
        fig.savefig(p, format=fmt, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(p)
    plt.close(fig)
    return paths
