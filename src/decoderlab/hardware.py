"""What this machine can run: the accelerator, precision and compiler a config asks for, checked before anything runs.

Lightning and torch report these late (at ``Trainer`` construction, or at the first compiled step) and as tracebacks
from deep inside; :func:`device_problems` turns each into one line naming the key.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from decoderlab.components.attention import FLEX_MIN_HEAD_DIM

GPU_NAMES = ("gpu", "cuda")
XLA_NAMES = ("tpu", "xla")  # Lightning's names for a TPU (through torch_xla)


def xla_available() -> bool:
    """Whether torch_xla (what Lightning drives a TPU with) is installed; not imported (it is slow and may grab the
    device)."""
    return importlib.util.find_spec("torch_xla") is not None


def usable_accelerators() -> list[str]:
    """The ``trainer.accelerator`` values this machine can run."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda", "gpu"]
    if torch.backends.mps.is_available():
        out.append("mps")
    if xla_available():
        out.append("tpu")
    return out


def target_device(accelerator: str) -> str:
    """``cuda``, ``mps`` or ``cpu``: where ``trainer.accelerator`` puts the model (``auto`` as Lightning picks)."""
    if accelerator in GPU_NAMES:
        return "cuda"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(accelerator)


def compiler_problem(device: str, backend: str) -> str | None:
    """Why ``torch.compile(backend=...)`` cannot run on ``device`` here, or None."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python/torch build"
    if backend != "inductor":
        return None
    if device == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "the inductor backend needs Triton on CUDA (pip install triton)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 - any failure means no usable C++ compiler
        return f"the inductor backend needs a C++ compiler on the CPU ({type(e).__name__}: {e})"
    return None


def device_problems(trainer: Any, model: Any = None) -> list[str]:
    """One line per setting of ``trainer`` (the run's TrainerConfig), or of ``model`` on that device, this machine
    cannot honour."""
    out: list[str] = []
    acc, precision = str(trainer.accelerator), str(trainer.precision)
    if acc in GPU_NAMES and not torch.cuda.is_available():
        out.append(f"trainer.accelerator={acc}: no CUDA GPU is visible on this machine; use trainer.accelerator=cpu "
                   "(or auto)")
        return out
    if acc == "mps" and not torch.backends.mps.is_available():
        out.append("trainer.accelerator=mps: no Apple GPU (MPS) is available here; use trainer.accelerator=cpu")
        return out
    if acc in XLA_NAMES and not xla_available():
        out.append(f"trainer.accelerator={acc}: no TPU/XLA here (torch_xla is not installed); accelerators this "
                   f"machine can run: {', '.join(usable_accelerators())}")
        return out
    device = target_device(acc)
    if precision.startswith("bf16") and device == "cuda" and not torch.cuda.is_bf16_supported():
        out.append(f"trainer.precision={precision}: this GPU ({torch.cuda.get_device_name()}) has no bfloat16 "
                   "support; use 16-mixed or 32-true")
    if trainer.compile:
        why = compiler_problem(device, str(getattr(trainer, "compile_backend", "inductor")))
        if why:
            out.append(f"trainer.compile=true: {why}; set trainer.compile=false or trainer.compile_backend=aot_eager")
    attention = getattr(model, "attention", None) if model is not None else None
    if device != "cuda" and attention is not None and attention.get("impl") == "flex":
        out.append(f"model.attention.impl=flex: FlexAttention has no backward pass on the {device.upper()} (torch "
                   f"{torch.__version__.split('+')[0]}), so it cannot train here; use impl=auto (SDPA with the bias "
                   "mask here, flex on a CUDA GPU)")
    if device == "cuda" and attention is not None and attention.get("impl") == "flex" and model.n_heads > 0:
        head_dim = model.d_model // model.n_heads
        if head_dim < FLEX_MIN_HEAD_DIM:
            out.append(f"model.attention.impl=flex: FlexAttention's GPU kernel needs heads of at least "
                       f"{FLEX_MIN_HEAD_DIM} dimensions, got model.d_model/model.n_heads = {head_dim}; use "
                       f"impl=auto (SDPA for such heads) or fewer, wider heads")
    return out
