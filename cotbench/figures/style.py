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


# metadata that would differ between runs or machines (dates, tool versions) is left out of each format
_METADATA = {"png": {"Software": None}, "svg": {"Date": None},
             "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}}


def save(fig, out: str | Path, formats: tuple[str, ...] | None = None) -> list[Path]:
    """Write ``fig`` deterministically and close it: to ``out`` itself (format from its suffix) or, with
    ``formats``, to ``out.<fmt>`` for each format (``out`` a path stem). Returns the files written."""
    out = Path(out)
    paths = [out] if formats is None else [out.with_name(f"{out.name}.{fmt}") for fmt in formats]
    try:
        for p in paths:
            fmt = p.suffix.lower().lstrip(".")
            if fmt not in _METADATA:
                raise ValueError(f"{p}: output must end in .png, .pdf or .svg")
            p.parent.mkdir(parents=True, exist_ok=True)
            with plt.rc_context({"svg.hashsalt": "cotbench"}):
                fig.savefig(p, format=fmt, dpi=150, bbox_inches="tight", metadata=_METADATA[fmt])
    finally:
        plt.close(fig)
    return paths
