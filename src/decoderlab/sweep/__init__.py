"""Sweeps you can trust: a plan before launch, each job in its own process, skipping finished jobs, sizing.

* :mod:`~decoderlab.sweep.launch` / :mod:`~decoderlab.sweep.execute`: the engine of ``hydra/launcher=decoderlab``
  (the plugin lives in ``src/hydra_plugins/decoderlab_launcher``).
* :mod:`~decoderlab.sweep.jobs`: config fingerprints, finished-job detection, varying overrides.
* :mod:`~decoderlab.sweep.results`: the per-job table and ``sweep_summary.json``.
* :mod:`~decoderlab.sweep.plan`: parameters, FLOPs per token and memory of each sweep point (``--plan``).
* :mod:`~decoderlab.sweep.sizing`: ``model.param_budget``, parameter-matched variants.
* :mod:`~decoderlab.sweep.child`: what a job does with its sweep context (wandb group, job type, tags).
"""
