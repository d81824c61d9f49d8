"""Analyses over finished runs: CoT gains, the "=" split, paired significance, selective CoT,
our scoring vs the published generations' (``disagreements``) and the Section-5 plan/tool comparison.

Every analysis takes the sample table (one row per SampleResult, see :mod:`cotbench.analysis.load`)
and returns a pandas DataFrame; reading runs is :mod:`cotbench.analysis.load`, printing
:mod:`cotbench.analysis.cli` and :mod:`cotbench.analysis.render`; importing the published generations
(hub and file I/O) is :mod:`cotbench.published.importer`.
"""
from cotbench.analysis.load import load_run, load_runs  # noqa: F401
