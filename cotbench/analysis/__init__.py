"""Analyses over finished runs: CoT gains, the "=" split, paired significance, selective CoT,
published generations and the Section-5 plan/tool comparison.

Every analysis takes the sample table (one row per SampleResult, see :mod:`cotbench.analysis.load`)
and returns a pandas DataFrame; I/O and printing live in :mod:`cotbench.analysis.cli`.
"""
from cotbench.analysis.load import load_run, load_runs  # noqa: F401
