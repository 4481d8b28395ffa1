"""Sweeps you can trust: a plan before launch, each job in its own process, skipping finished jobs, per-job results.

* :mod:`~decoderlab.sweep.launch` / :mod:`~decoderlab.sweep.execute`: the engine of ``hydra/launcher=decoderlab``
  (the plugin lives in ``src/hydra_plugins/decoderlab_launcher``).
* :mod:`~decoderlab.sweep.jobs`: a job's task config; setting an earlier attempt aside.
* :mod:`~decoderlab.sweep.results`: the per-job table, ``sweep_summary.json`` and the session file.

A single run never imports this package. What a sweep shares with single runs lives below it:
:mod:`decoderlab.rundir` (the skip-finished rule, fingerprints), :mod:`decoderlab.plan` (``--plan``),
:mod:`decoderlab.sizing` (``param_budget``), :mod:`decoderlab.overrides` (varying overrides, variant labels) and
:mod:`decoderlab.wandb_names` (a job's wandb group, job type, name and tags).
"""
