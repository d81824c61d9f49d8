"""The run pipeline (``cotbench run``), its modules in the order data flows through them.

* ``settings``  the study's prompting conditions (zs/fs x direct/CoT, plan/execute/tool)
* ``prompts``   an Example under a setting -> chat messages, from the task's prompt file
* ``model_registry``  model names -> how to reach them (backend, endpoint, revision, prices)
* ``config``    RunConfig in three parts (generation / execution / reporting): defaults < YAML < flags;
                what identifies a run
* ``sampling``  seeded, stratified item samples (``--sample``)
* ``store``     the request-keyed generation store (no paid call is ever made twice)
* ``runner``    units stepped in lockstep rounds; each round is one backend batch; scoring
* ``summary``   per (model, dataset, setting) lines, summary.csv written and read back
* ``progress``  the progress bar
* ``harness``   one run end to end: config -> data -> backend -> runner -> run directory
* ``console``   terminal tables (a run's summary, the dataset/model/setting lists)
* ``cli`` / ``batches_cli``  the ``run``, ``list``, ``report`` and ``batches`` sub-commands

Datasets (``cotbench.tasks``), solvers, backends and the answer extractors (``cotbench.scoring``) are
packages of their own that the runner drives; the analyses read what the harness writes.
"""
