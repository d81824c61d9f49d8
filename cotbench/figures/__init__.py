"""Deterministic figures of the study's shapes (Fig. 1 right, Fig. 3, Fig. 4), the selective-CoT
frontier and the Section-5 plan/tool comparison. See :func:`cotbench.figures.plots.make_all`."""
