"""Settings this machine cannot honour are one line naming the key, before anything runs (decoderlab.hardware)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli
from decoderlab import hardware
from decoderlab.config import TrainerConfig


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("acc", ["gpu", "cuda"])
def test_a_gpu_asked_for_where_there_is_none_is_named(acc):
    problems = hardware.device_problems(TrainerConfig(accelerator=acc))
    assert problems == [f"trainer.accelerator={acc}: no CUDA GPU is visible on this machine; use "
                        "trainer.accelerator=cpu (or auto)"]


def test_unsupported_bf16_on_a_gpu_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    (problem,) = hardware.device_problems(TrainerConfig(accelerator="gpu", precision="bf16-mixed"))
    assert problem.startswith("trainer.precision=bf16-mixed: this GPU (Tesla V100) has no bfloat16 support")
    assert hardware.device_problems(TrainerConfig(accelerator="gpu", precision="16-mixed")) == []


def test_a_missing_compiler_is_named_only_when_compiling(monkeypatch):
    import torch._inductor.cpp_builder as cpp

    def no_compiler():
        raise RuntimeError("no g++ or clang++ found")

    monkeypatch.setattr(cpp, "get_cpp_compiler", no_compiler)
    cfg = TrainerConfig(accelerator="cpu", compile=True)
    (problem,) = hardware.device_problems(cfg)
    assert problem.startswith("trainer.compile=true: the inductor backend needs a C++ compiler on the CPU")
    assert "no g++ or clang++ found" in problem
    assert hardware.device_problems(TrainerConfig(accelerator="cpu", compile=False)) == []
    assert hardware.device_problems(TrainerConfig(accelerator="cpu", compile=True, compile_backend="aot_eager")) == []


def test_flex_with_heads_too_small_for_its_gpu_kernel_is_named(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    def model(d_model: int, impl: str):
        return OmegaConf.create({"d_model": d_model, "n_heads": 4, "attention": {"name": "mha", "impl": impl}})

    (problem,) = hardware.device_problems(TrainerConfig(accelerator="gpu"), model(32, "flex"))
    assert problem == ("model.attention.impl=flex: FlexAttention's GPU kernel needs heads of at least 16 dimensions, "
                       "got model.d_model/model.n_heads = 8; use impl=auto (SDPA for such heads) or fewer, wider heads")
    assert hardware.device_problems(TrainerConfig(accelerator="gpu"), model(64, "flex")) == []
    assert hardware.device_problems(TrainerConfig(accelerator="gpu"), model(32, "auto")) == []  # auto takes SDPA
    assert hardware.device_problems(TrainerConfig(accelerator="cpu"), model(32, "auto")) == []  # CPU: SDPA


def test_flex_cannot_train_on_the_cpu_and_says_so_before_anything_runs(tmp_path):
    """FlexAttention has no CPU backward: a t5 run with impl=flex on the CPU crashed in its first backward pass."""
    from omegaconf import OmegaConf

    model = OmegaConf.create({"d_model": 64, "n_heads": 4, "attention": {"name": "mha", "impl": "flex"}})
    (problem,) = hardware.device_problems(TrainerConfig(accelerator="cpu"), model)
    assert problem.startswith("model.attention.impl=flex: FlexAttention has no backward pass on the CPU (torch ")
    assert problem.endswith("so it cannot train here; use impl=auto (SDPA with the bias mask here, flex on a CUDA GPU)")
    out = run_cli(["decoderlab-train", *TINY, "model/positional=t5", "model.attention.impl=flex",
                   f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr and problem in " ".join(out.stderr.split())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_this_machine_runs_the_defaults():
    assert hardware.device_problems(TrainerConfig()) == []


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_the_cli_refuses_a_missing_gpu_in_one_line(tmp_path: Path):
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", "logger=csv", "trainer.accelerator=gpu"],
                  cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text
    assert "trainer.accelerator=gpu: no CUDA GPU is visible on this machine" in " ".join(text.split())
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("acc", ["tpu", "xla"])
def test_a_tpu_asked_for_without_torch_xla_is_named_with_the_usable_accelerators(acc, monkeypatch):
    monkeypatch.setattr(hardware, "xla_available", lambda: False)
    (problem,) = hardware.device_problems(TrainerConfig(accelerator=acc))
    assert problem.startswith(f"trainer.accelerator={acc}: no TPU/XLA here (torch_xla is not installed); "
                              "accelerators this machine can run: auto, cpu")


@pytest.mark.slow
def test_the_cli_refuses_a_tpu_in_one_line(tmp_path: Path):
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", "logger=csv", "trainer.accelerator=tpu"],
                  cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text and "ModuleNotFoundError" not in text, text[-2000:]
    assert "trainer.accelerator=tpu: no TPU/XLA here" in " ".join(text.split())
