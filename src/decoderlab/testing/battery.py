"""The conformance battery: generic checks every model component must pass, plugins included.

A :class:`Case` swaps one (or a few) component configs into a tiny default :class:`ModelConfig`; each ``check_*``
function builds the model it needs and raises ``AssertionError`` with a message naming the case. The checks are
plain functions so they run outside pytest too; :mod:`decoderlab.testing.test_battery` parametrizes them.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from decoderlab.components.attention import CausalSelfAttention
from decoderlab.components.positional import Positional
from decoderlab.model import Decoder, KVCache, ModelConfig

VOCAB = 37  # odd and prime: a reshape that mixes the vocabulary with another axis cannot pass by luck
TINY: dict[str, Any] = dict(n_layers=2, n_heads=4, d_model=32, block_size=16)
ONLY_ENV = "DECODERLAB_CONFORMANCE_ONLY"  # "plugins": test only components not from the decoderlab package


@dataclass(frozen=True)
class Case:
    """One model to test: ``slots`` maps a slot key (``attention``) to the config replacing the default's."""

    slots: dict[str, dict[str, Any]]
    source: str = "decoderlab"  # module that registered the component under test
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or ",".join(f"{k}={_fmt(v)}" for k, v in self.slots.items())

    @property
    def is_core(self) -> bool:
        return self.source.startswith("decoderlab.")

    def model_config(self, **overrides: Any) -> ModelConfig:
        """The tiny default config with this case's components swapped in."""
        return ModelConfig(**{**TINY, **overrides, **{k: dict(v) for k, v in self.slots.items()}})

    def build(self, seed: int = 0, **overrides: Any) -> Decoder:
        """A fresh model, initialized from ``seed`` without touching the global RNG."""
        cfg = self.model_config(**overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Decoder(cfg, VOCAB).eval()


def _fmt(cfg: dict[str, Any]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in cfg.items() if k != "name")
    return f"{cfg['name']}[{extra}]" if extra else str(cfg["name"])


# Core options whose fields change the computation enough to deserve their own run through the battery.
CORE_VARIANTS: list[Case] = [
    Case({"attention": {"name": "mha", "n_kv_heads": 2}, "positional": {"name": "rope"}}),
    Case({"attention": {"name": "mha", "n_kv_heads": 1}}),
    Case({"attention": {"name": "mha", "qk_norm": True}, "positional": {"name": "rope"}}),
    Case({"attention": {"name": "mha", "impl": "math"}, "positional": {"name": "t5"}}),
    Case({"norm": {"name": "layernorm", "bias": False}}),
    Case({"ffn": {"name": "mlp", "activation": "relu"}}),
    Case({"ffn": {"name": "mlp", "activation": "relu2"}}),
    Case({"ffn": {"name": "swiglu", "match_params": False, "multiplier": 2.0}}),
]

# torch.compile costs ~20-36 s per model on a 2-core CPU: a few combinations cover every core code path kind.
COMPILE_CASES: list[Case] = [
    Case({}, label="defaults"),
    Case({"positional": {"name": "rope"}, "attention": {"name": "mha", "n_kv_heads": 2, "qk_norm": True},
          "placement": {"name": "parallel"}, "norm": {"name": "rmsnorm"}, "ffn": {"name": "swiglu"}}),
    Case({"positional": {"name": "t5"}, "placement": {"name": "deepnorm"}, "norm": {"name": "scalenorm"},
          "ffn": {"name": "geglu"}}),
]


def registered_cases() -> list[Case]:
    """One case per registered component of every model slot, after loading plugins."""
    from decoderlab.components import MODEL_REGISTRIES
    from decoderlab.plugins import load_plugins

    load_plugins()
    out = []
    for group, registry in MODEL_REGISTRIES.items():
        slot = group.split("/", 1)[1]
        out += [Case({slot: {"name": e.name}}, source=e.source) for e in registry]
    return out


def all_cases(only: str | None = None) -> list[Case]:
    """Every registered component plus the core variants; ``only="plugins"`` keeps the non-core ones."""
    only = only if only is not None else os.environ.get(ONLY_ENV, "")
    cases = registered_cases()
    if only == "plugins":
        return [c for c in cases if not c.is_core]
    return cases + CORE_VARIANTS


def compile_cases(only: str | None = None) -> list[Case]:
    """The representative core combinations, plus every plugin component on its own."""
    only = only if only is not None else os.environ.get(ONLY_ENV, "")
    plugin = [c for c in registered_cases() if not c.is_core]
    return plugin if only == "plugins" else COMPILE_CASES + plugin


def _ids(batch: int = 2, seed: int = 0, t: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, t or TINY["block_size"]), generator=g)  # (B, T)


def _where(case: Case) -> str:
    return f"[{case.id} from {case.source}]"


def check_config(case: Case) -> None:
    """Every slot config is known, typed, and passes its own ``check()`` in the tiny default model."""
    from omegaconf import OmegaConf

    from decoderlab.components import MODEL_REGISTRIES

    cfg = case.model_config()
    model_cfg = OmegaConf.create(dataclasses.asdict(cfg))
    for group, registry in MODEL_REGISTRIES.items():
        typed = registry.build_config(getattr(cfg, group.split("/", 1)[1]))
        if hasattr(typed, "check"):
            problems = typed.check(model_cfg)
            assert isinstance(problems, list), f"{_where(case)} {group}.check() must return a list of str"
            assert not problems, f"{_where(case)} {group}.check() rejects the tiny default model: {problems}"


def check_ranges(case: Case) -> None:
    """The component's config declares a range for every numeric field (``RANGES``), each range parses and names
    a field, and the case's values lie in their ranges: composition checks a user's values against these."""
    from decoderlab.components import MODEL_REGISTRIES
    from decoderlab.ranges import component_range_problems, declaration_problems

    for slot, cfg in case.slots.items():
        group = f"model/{slot}"
        entry = MODEL_REGISTRIES[group].get(cfg["name"])
        malformed, undeclared = declaration_problems(entry.config_cls)
        assert not malformed, f"{_where(case)} {group}={entry.name}: {'; '.join(malformed)}"
        assert not undeclared, (f"{_where(case)} {group}={entry.name}: numeric field(s) {', '.join(undeclared)} have "
                                f"no declared range: add them to {entry.config_cls.__qualname__}.RANGES "
                                f"(e.g. {{{undeclared[0]!r}: '(0, inf)'}})")
        typed = MODEL_REGISTRIES[group].build_config(dict(cfg))
        bad = component_range_problems(f"model.{slot}", typed)
        assert not bad, f"{_where(case)} its defaults are outside their declared ranges: {'; '.join(bad)}"


def check_shapes(case: Case) -> None:
    """Logits are (B, T, vocab) float32 for T = 1, a middle length and block_size."""
    model = case.build()
    for t in (1, 5, TINY["block_size"]):
        with torch.no_grad():
            logits = model(_ids(t=t))
        assert logits.shape == (2, t, VOCAB), f"{_where(case)} T={t}: logits {tuple(logits.shape)}"
        assert logits.dtype == torch.float32, f"{_where(case)} logits dtype {logits.dtype}"
        assert torch.isfinite(logits).all(), f"{_where(case)} T={t}: non-finite logits"


def check_causal(case: Case) -> None:
    """Changing tokens after position t never changes the logits at positions <= t (and does change later ones)."""
    model = case.build()
    x = _ids()
    T = x.shape[1]
    with torch.no_grad():
        base = model(x)
        for t in (0, T // 2, T - 2):
            x2 = x.clone()
            x2[:, t + 1:] = (x[:, t + 1:] + 1 + _ids(seed=t + 1)[:, t + 1:] % (VOCAB - 1)) % VOCAB  # all differ
            out = model(x2)
            diff = (out[:, : t + 1] - base[:, : t + 1]).abs().max().item()
            assert diff <= 1e-6, f"{_where(case)} future tokens after {t} changed logits at <= {t} by {diff:.3g}"
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:]), f"{_where(case)} logits ignore the tokens"


def check_grads(case: Case) -> None:
    """A cross-entropy backward reaches every trainable parameter with a finite gradient."""
    model = case.build().train()
    x = _ids()
    model.loss(x[:, :-1], x[:, 1:]).backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{_where(case)} parameter {name} gets no gradient (unused? make it a buffer)"
        assert torch.isfinite(p.grad).all(), f"{_where(case)} parameter {name} has a non-finite gradient"


def check_state_dict_roundtrip(case: Case) -> None:
    """A state dict saved with torch.save loads (weights_only, strict) into a fresh model: identical outputs."""
    src, dst = case.build(seed=0), case.build(seed=1)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    dst.load_state_dict(state, strict=True)
    x = _ids()
    with torch.no_grad():
        a, b = src(x), dst(x)
    assert torch.equal(a, b), f"{_where(case)} outputs differ after a state-dict round trip"


def check_determinism(case: Case) -> None:
    """The same seed gives the same weights and outputs; dropout draws only from torch's seeded RNG."""
    a, b = case.build(seed=3, dropout=0.1), case.build(seed=3, dropout=0.1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), f"{_where(case)} {name} differs between two builds with one seed"
    x, outs = _ids(), []
    for m in (a.train(), b.train()):
        torch.manual_seed(7)
        outs.append(m(x))
    assert torch.equal(outs[0], outs[1]), f"{_where(case)} training-mode outputs differ under one seed"


def check_bf16(case: Case) -> None:
    """Under bf16 autocast (Lightning's bf16-mixed) and in pure bf16 the forward is finite and close to fp32."""
    model = case.build()
    x = _ids()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x).float()
        pure = model.to(torch.bfloat16)(x).float()
    for how, out in (("autocast", mixed), ("pure bf16", pure)):
        assert torch.isfinite(out).all(), f"{_where(case)} {how}: non-finite logits"
        rel = ((out - ref).norm() / ref.norm()).item()
        assert rel < 0.1, f"{_where(case)} {how}: relative error {rel:.3g} vs fp32 (bf16 should stay under 0.1)"


def check_kv_cache(case: Case) -> None:
    """Decoding with a KV cache (a prompt, then one token at a time) gives the logits of the full forward."""
    model = case.build()
    x = _ids()
    with torch.no_grad():
        full = model(x)
        caches = [KVCache() for _ in model.blocks]
        steps = [model(x[:, :6], caches)] + [model(x[:, t:t + 1], caches) for t in range(6, x.shape[1])]
    inc = torch.cat(steps, dim=1)  # (B, T, vocab)
    diff = (inc - full).abs().max().item()
    assert diff <= 1e-5, f"{_where(case)} cached decoding differs from the full forward by {diff:.3g}"


def _flex_pair(case: Case) -> tuple[Decoder, Decoder] | None:
    """The case's model twice with the same weights, attention through SDPA's float mask and through FlexAttention
    with the encoding's ``score_mod``; None where that does not apply (no score_mod, or a non-``mha`` attention)."""
    ref = case.build()
    if not ref.positional.has_score_mod or not isinstance(ref.blocks[0].attn, CausalSelfAttention):
        return None
    att = {**case.slots.get("attention", {"name": "mha"}), "impl": "flex"}
    flex = dataclasses.replace(case, slots={**case.slots, "attention": att}).build()
    flex.load_state_dict(ref.state_dict())
    with torch.no_grad():  # a learned bias table may start at zero: make every head's bias differ
        for p in flex.positional.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel()).view_as(p))
        ref.positional.load_state_dict(flex.positional.state_dict())
    return ref.eval(), flex


def _cached_steps(model: Any, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Logits of a 6-token prefill, then one token at a time over a growing KV cache: (B, T, vocab)."""
    caches = [KVCache() for _ in range(n_blocks)]
    return torch.cat([model(x[:, :6], caches)] + [model(x[:, t:t + 1], caches) for t in range(6, x.shape[1])], 1)


def check_score_mod(case: Case) -> None:
    """An encoding's ``score_mod`` is its ``bias``: FlexAttention (eager, CPU) gives the SDPA float-mask logits,
    for the full sequence and for KV-cached decoding (queries offset by the cache). CUDA trains through it."""
    pair = _flex_pair(case)
    if pair is None:
        return
    ref, flex = pair
    x = _ids()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile": the eager reference
        want, got = ref(x), flex(x)
        inc = _cached_steps(flex, x, len(flex.blocks))
    for how, out in (("full sequence", got), ("KV-cached decoding", inc)):
        diff = (out - want).abs().max().item()
        assert diff <= 1e-5, f"{_where(case)} {how}: FlexAttention's score_mod differs from bias() by {diff:.3g}"


def check_compile(case: Case) -> None:
    """``torch.compile`` (inductor) gives the eager logits (slow: ~20-36 s per model cold on a 2-core CPU)."""
    model = case.build()
    x = _ids()
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model, fullgraph=True)(x)
    diff = (out - ref).abs().max().item()
    assert diff <= 1e-4, f"{_where(case)} compiled logits differ from eager by {diff:.3g}"


def check_position_effect(case: Case) -> None:
    """A positional encoding changes the model's output compared with none (unless it declares ``position_free``).

    Catches an encoding whose hooks are never called or compute nothing: it would train exactly as ``none``.
    """
    if "positional" not in case.slots:
        return
    model = case.build()
    if model.positional.position_free:
        return
    x = _ids()
    with torch.no_grad():
        out = model(x)
        model.positional = Positional()  # the identity for every hook: what ``none`` computes, same weights
        ref = model(x)
    diff = (out - ref).abs().max().item()
    assert diff > 1e-5, (
        f"{_where(case)} the encoding does not change the model's output compared with positional=none (max "
        f"difference {diff:.3g}): override embed, rotate or bias with a real effect, or set position_free = True"
    )


def _fullgraph_steps(model: Decoder, backend: str) -> None:
    """Compile ``model`` with fullgraph=True; run a training forward+backward, then cached generation steps."""
    x = _ids()
    model.train()
    logits = torch.compile(model, backend=backend, fullgraph=True)(x[:, :-1])  # (B, T, vocab)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    torch._dynamo.reset()
    model.eval()
    caches = [KVCache() for _ in model.blocks]
    decode = torch.compile(model, backend="eager", fullgraph=True)  # no backward here: dynamo alone finds breaks
    with torch.no_grad():
        decode(x[:, :6], caches)  # prefill
        for t in (6, 7):  # one new token per step over a growing cache (the second step is the dynamic-shape one)
            decode(x[:, t:t + 1], caches)


def _flex_fullgraph_steps(case: Case, backend: str) -> None:
    """An encoding with a ``score_mod`` also compiles as one graph through FlexAttention (its CUDA path): the
    causal block mask built inside the graph, full forward and cached decoding. CPU has no flex backward."""
    pair = _flex_pair(case)
    if pair is None:
        return
    ref, flex = pair
    x = _ids()
    compiled = torch.compile(flex, backend=backend, fullgraph=True)
    with torch.no_grad():
        want = ref(x)
        got, inc = compiled(x), _cached_steps(compiled, x, len(flex.blocks))
    for how, out in (("full sequence", got), ("KV-cached decoding", inc)):
        diff = (out - want).abs().max().item()
        assert diff <= 1e-5, f"{_where(case)} compiled FlexAttention ({how}) differs from SDPA by {diff:.3g}"


def check_fullgraph(case: Case, backend: str = "aot_eager") -> None:
    """The model compiles as one graph (fullgraph=True), forward and backward, at training and cached-generation
    shapes: no ``.item()``, ``int(tensor)``, ``.tolist()`` or tensor-dependent Python branch inside ``forward``.
    An encoding with a ``score_mod`` compiles through FlexAttention too (forward: CPU has no flex backward).

    ``aot_eager`` traces the joint forward/backward graph without Inductor's codegen: it finds every graph break
    at a fraction of a full compile's cost. The error names the component and the line that broke the graph.
    """
    torch._dynamo.reset()  # a fresh cache per model: no recompile limit carried over from other cases
    try:
        _fullgraph_steps(case.build(dropout=0.1), backend)
        torch._dynamo.reset()
        _flex_fullgraph_steps(case, backend)
    except torch._dynamo.exc.TorchDynamoException as e:  # Unsupported (graph break), UserError (data-dependent)
        raise AssertionError(f"{_where(case)} breaks the graph under torch.compile(fullgraph=True):\n{e}") from None
    finally:
        torch._dynamo.reset()


CHECKS = [check_config, check_ranges, check_shapes, check_causal, check_grads, check_state_dict_roundtrip, check_determinism,
          check_bf16, check_kv_cache, check_position_effect, check_score_mod]
