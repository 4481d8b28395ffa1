"""wandb names (decoderlab.wandb_names): one function names single runs and every sweep job."""

from __future__ import annotations

import json

from decoderlab.wandb_names import JOB_ENV, wandb_names

CHOICES = {"model/positional": "rope", "tokenizer": "char"}


def test_a_decoderlab_launcher_job_is_grouped_by_sweep_and_typed_by_variant(monkeypatch):
    monkeypatch.setenv(JOB_ENV, json.dumps({"sweep_dir": "multirun/pe", "num": 4, "variant": "model/positional=rope",
                                            "varying": ["model/positional=rope", "seed=1"]}))
    names = wandb_names(CHOICES)
    assert names == {"group": "multirun/pe", "job_type": "model/positional=rope",
                     "name": "4:model/positional=rope,seed=1",
                     "tags": ["positional=rope", "tokenizer=char", "model/positional=rope", "seed=1"]}
    assert wandb_names(CHOICES, run_name="mine")["name"] == "mine"  # the config's run_name wins


def test_a_run_outside_any_sweep_is_named_after_its_choices(monkeypatch):
    monkeypatch.delenv(JOB_ENV, raising=False)
    names = wandb_names(CHOICES)
    assert "group" not in names and names["tags"] == ["positional=rope", "tokenizer=char"]
