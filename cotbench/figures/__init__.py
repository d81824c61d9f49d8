"""Deterministic figures: ``study.py`` draws the study's shapes from run directories (Fig. 1 right,
Fig. 3, Fig. 4, the selective-CoT frontier, the Section-5 plan/tool comparison; see
:func:`cotbench.figures.study.make_all`); ``literature.py`` draws the meta-analysis figures (Fig. 2,
forest, funnel). Both write through :func:`cotbench.figures.style.save`."""
