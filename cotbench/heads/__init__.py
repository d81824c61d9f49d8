"""Inside the model: retrieval heads, head knockout and LoFiT (needs the optional extra ``[heads]``).

``probes`` builds copy probes (needles, real items), ``retrieval`` scores heads on them, ``intervene``
edits heads while a model runs, ``lofit`` trains head offsets, ``analysis`` compares intervened runs with
their base run, ``figures`` draws heatmaps and before/after plots, ``cli`` is ``cotbench heads ...``.
"""
