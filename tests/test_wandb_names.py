"""wandb names (decoderlab.wandb_names): one function names single runs and every sweep job, under every launcher,
from the keys the sweep varies (never the seed or a constant)."""

from __future__ import annotations

import json

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from decoderlab.overrides import SEARCH, SEED, VARY, defer_to_jobs, sweep_axes
from decoderlab.wandb_names import JOB_ENV, OVERRIDES_ENV, wandb_names

CHOICES = {"model/positional": "rope", "tokenizer": "char"}
ARGV = ["model/positional=rope,learned", "seed=0,1", "model.d_model=16", "trainer.max_steps=6"]
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


@pytest.fixture(autouse=True)
def _no_sweep(monkeypatch):
    monkeypatch.delenv(JOB_ENV, raising=False)
    monkeypatch.delenv(OVERRIDES_ENV, raising=False)
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().cfg = None
    yield
    HydraConfig.instance().cfg = saved


def _in_process_job(num: int, task: list[str], params: dict | None = None, sweeper: str = "BasicSweeper") -> None:
    """What Hydra's basic and submitit launchers set in each job: its multirun config."""
    hydra = {"mode": RunMode.MULTIRUN, "sweep": {"dir": "multirun/pe"}, "job": {"num": num},
             "overrides": {"task": task, "hydra": []}, "sweeper": {"_target_": sweeper, "params": params}}
    HydraConfig.instance().cfg = OmegaConf.create({"hydra": hydra})  # type: ignore[assignment]


def test_sweep_axes_are_the_swept_keys_seed_apart_and_constants_left_out():
    axes = sweep_axes(ARGV + ["x=choice(3)", "n=range(1,4)", "hydra.sweep.dir=a"], {"optim.lr": "interval(0.1,1)"})
    assert axes == {"optim.lr": SEARCH, "model/positional": VARY, "seed": SEED, "n": VARY}
    assert sweep_axes(["n=range(1,4)"], searching=True) == {"n": SEARCH}  # Optuna samples a range


def test_a_decoderlab_launcher_job_is_typed_by_its_variant_never_by_seed_or_constants(monkeypatch):
    overrides = ["model/positional=rope", "seed=1", "model.d_model=16"]
    monkeypatch.setenv(JOB_ENV, json.dumps({"sweep_dir": "multirun/pe", "num": 4, "overrides": overrides,
                                            "axes": sweep_axes(ARGV)}))
    names = wandb_names(CHOICES)
    assert names == {"group": "multirun/pe", "job_type": "model/positional=rope",
                     "name": "4:model/positional=rope,seed=1",
                     "tags": ["positional=rope", "tokenizer=char", "model/positional=rope"]}
    assert wandb_names(CHOICES, run_name="mine")["name"] == "mine"  # the config's run_name wins


def test_an_in_process_job_submitit_or_basic_gets_the_same_names(monkeypatch):
    monkeypatch.setenv(OVERRIDES_ENV, json.dumps(ARGV))  # what decoderlab-train -m recorded
    _in_process_job(3, ["model/positional=rope", "seed=1", "model.d_model=16", "trainer.max_steps=6"])
    names = wandb_names(CHOICES)
    assert names["job_type"] == "model/positional=rope" and names["group"] == "multirun/pe"
    assert names["name"] == "3:model/positional=rope,seed=1"
    assert "seed=1" not in names["tags"] and "model.d_model=16" not in names["tags"]


def test_optuna_trials_share_one_job_type_naming_the_searched_key(monkeypatch):
    monkeypatch.setenv(OVERRIDES_ENV, json.dumps(["model/positional=rope,alibi"]))
    params = {"optim.lr": "tag(log, interval(1e-4, 3e-2))", "model.n_layers": "range(1,4)"}
    types = set()
    for num, lr in enumerate(("0.0012", "0.0071")):
        _in_process_job(num, ["model/positional=rope", f"optim.lr={lr}", f"model.n_layers={num + 1}"], params, OPTUNA)
        names = wandb_names(CHOICES)
        types.add(names["job_type"])
        assert f"optim.lr={lr}" in names["name"]  # the trial itself is still told apart by its name
    assert types == {"model/positional=rope; search: optim.lr,model.n_layers"}
    assert {"search:optim.lr", "model/positional=rope"} <= set(names["tags"])


def test_a_run_outside_any_sweep_is_named_after_its_choices():
    names = wandb_names(CHOICES)
    assert "group" not in names and names["tags"] == ["positional=rope", "tokenizer=char"]


def test_settings_of_a_swept_groups_node_are_deferred_to_each_job():
    def is_group(key: str) -> bool:
        return "/" in key or key == "model"

    args = ["-m", "model/positional=rope,learned", "model.positional.base=500", "model.d_model=16", "seed=1"]
    assert defer_to_jobs(args, is_group) == ["-m", "model/positional=rope,learned",
                                            "model.positional.base=choice(500)", "model.d_model=16", "seed=1"]
    assert defer_to_jobs(args[:1] + args[2:], is_group) == args[:1] + args[2:]  # no group swept: unchanged
