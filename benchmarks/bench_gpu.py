"""GPU training throughput: decoderlab's real training path against a hand-written loop on the same model.

For every (shape, mode, model) it trains the same :class:`Decoder` twice in one process:

- ``hand``: a plain PyTorch loop (autocast bf16, fused AdamW, gradient clipping at 1.0, ``torch.compile`` of the
  model in compiled mode): the reference the issue's targets are stated against;
- ``decoderlab``: the real path: Hydra composes ``conf/train.yaml`` with the overrides, decoderlab's data module
  serves windows of synthetic token ids, and Lightning's Trainer runs ``LitDecoder`` with decoderlab's loggers,
  callbacks and checkpoint IO (``runner.build_model``, ``fit.build_trainer``, ``fit.build_loggers``).

Shapes: ``gpt2`` (12 layers, 12 heads, d_model 768, T 1024, batch 16, vocabulary 50,304: GPT-2 small, 124M
parameters) and ``default`` (the default config's sizes). Modes: ``eager`` and ``compiled``. Models: the default,
every registered positional encoding, and the llama preset. Reports ms/step (the mean over the steps after the
warm-up, the device synchronized only at the window's two ends, so host work overlaps the GPU's as in a real run;
decoderlab's logging steps are inside the window), tokens/s, MFU against the device's dense bf16 peak
(6 N + 12 L T d FLOPs per token, PaLM appendix B), peak memory, decoderlab's ratio to the hand-written loop and
each model's step time relative to the default model's (the 1.3x targets). It writes
``benchmarks/results/gpu.{md,json}`` after every row (a run cut short keeps what it measured; a row that fails is
recorded with its error and the run goes on) and ends the table with the issue's targets: met, not met, or not
measured.

    python benchmarks/bench_gpu.py                                   # everything (a GPU: tens of minutes)
    python benchmarks/bench_gpu.py --shapes gpt2 --modes compiled --models default t5 alibi llama --hand default
    python benchmarks/bench_gpu.py --smoke                           # no GPU: a tiny CPU run, not a timing

``scripts/gpu_check.sh`` runs the targets' rows and the CUDA tests as one call on a lent GPU machine.

Without CUDA it runs ``--smoke`` (a tiny shape on the CPU, fp32, a few steps): it checks that the benchmark
runs, and its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched by substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0, "A10": 125.0, "RTX 4090": 165.0,
                    "RTX 3090": 71.0, "V100": 125.0}
SHAPES = {
    "gpt2": dict(overrides=["model.n_layers=12", "model.n_heads=12", "model.d_model=768", "model.block_size=1024",
                            "loader.batch_size=16"], vocab=50304),
    "default": dict(overrides=[], vocab=50304),
    "smoke": dict(overrides=["model.n_layers=2", "model.n_heads=2", "model.d_model=32", "model.block_size=32",
                             "loader.batch_size=4"], vocab=97),
}


def compose(overrides: list[str]):
    """``conf/train.yaml`` composed with ``overrides`` exactly as ``decoderlab-train`` composes it."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from decoderlab.config import register_schema, validate
    from decoderlab.plugins import load_plugins
    from decoderlab.train import conf_dir

    load_plugins()
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base=None):
        cfg = hcompose("train", overrides=overrides)
    validate(cfg)
    return cfg


def synthetic_data(vocab: int, n_tokens: int, seed: int = 0) -> SimpleNamespace:
    """Uniform random token ids shaped like decoderlab's tokenized corpus (throughput does not read the text)."""
    ids = np.random.default_rng(seed).integers(0, vocab, size=n_tokens, dtype=np.int64).astype(np.uint32)
    tokenizer = SimpleNamespace(vocab_size=vocab, token_bytes=lambda: np.ones(vocab, dtype=np.int64))
    return SimpleNamespace(train=ids, val=ids[: n_tokens // 10], tokenizer=tokenizer, meta={}, directory=None)


def hand_loop(model: torch.nn.Module, data, cfg, steps: int, warmup: int, compiled: bool, device: str) -> float:
    """The hand-written reference loop; seconds per step over the steps after ``warmup`` (synced at both ends)."""
    B, T, o = cfg.loader.batch_size, cfg.model.block_size, cfg.optim
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=True)
    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the loss inside the graph, as nanoGPT's
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    step_loss = torch.compile(loss_fn) if compiled else loss_fn
    ids = torch.from_numpy(data.train.astype(np.int64))
    rng = np.random.default_rng(0)
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    t0 = None
    for step in range(steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        ix = torch.from_numpy(rng.integers(0, len(ids) - T - 1, size=B))
        w = torch.stack([ids[i:i + T + 1] for i in ix.tolist()]).pin_memory() if device == "cuda" else \
            torch.stack([ids[i:i + T + 1] for i in ix.tolist()])
        w = w.to(device, non_blocking=True)
        with amp:  # autocast runs cross_entropy in float32
            loss = step_loss(w[:, :-1], w[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return (time.perf_counter() - t0) / (steps - warmup)


def decoderlab_loop(cfg, data, steps: int, warmup: int) -> float:
    """decoderlab's real path (data module, LitDecoder, Trainer with its loggers and callbacks); seconds per step
    over the steps after ``warmup``, synchronized only at the two ends of that window."""
    from lightning.pytorch.callbacks import Callback

    from decoderlab.data.module import DecoderDataModule
    from decoderlab.fit import TrainTimer, build_lit, build_loggers, build_trainer
    from decoderlab.runner import build_model

    class Clock(Callback):
        def __init__(self, device: str) -> None:
            self.device, self.marks = device, {}

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step in (warmup, steps):  # after the warm-up's last step, after the final step
                _sync(self.device)
                self.marks[trainer.global_step] = time.perf_counter()

    model = build_model(cfg, data.tokenizer.vocab_size)
    dm = DecoderDataModule(data, cfg.model.block_size, cfg.loader.batch_size, cfg.loader.eval_batch_size, cfg.seed)
    lit = build_lit(cfg, model, data.tokenizer, max_steps=steps)  # compiles the step when trainer.compile=true
    clock = Clock("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(cfg, Path(out), build_loggers(cfg, Path(out), {}), TrainTimer())
        trainer.callbacks.append(clock)
        trainer.fit(lit, datamodule=dm)
    return (clock.marks[steps] - clock.marks[warmup]) / (steps - warmup)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def flops_per_token(model: torch.nn.Module, cfg) -> float:
    """6 N (matmul weights: the embedding table unless tied to the head, and positional tables, are lookups) +
    12 L T d (attention scores)."""
    n = sum(p.numel() for n_, p in model.named_parameters() if not n_.startswith(("tok_emb", "positional.")))
    n += model.head.weight.numel() if model.head.weight is model.tok_emb.weight else 0
    m = cfg.model
    return 6 * n + 12 * m.n_layers * m.block_size * m.d_model


def peak_tflops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def measure(shape: str, mode: str, model_name: str, a: argparse.Namespace, device: str) -> dict:
    """One row: decoderlab (and the hand-written loop, for models in ``--hand``) on the same config, timed here."""
    from decoderlab.runner import build_model

    s = SHAPES[shape]
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    over = ["logger=csv", f"trainer.max_steps={a.steps}", "trainer.enable_progress_bar=false",
            "+trainer.extra.limit_val_batches=0", "trainer.ckpt_every_n_steps=1000000", f"trainer.precision={precision}",
            f"trainer.log_every_n_steps={max(1, a.steps // 4)}", *s["overrides"]]
    over += [] if model_name == "default" else (["model=llama"] if model_name == "llama" else
                                                [f"model/positional={model_name}"])
    over.append(f"trainer.compile={'true' if mode == 'compiled' else 'false'}")  # LitDecoder compiles its step
    cfg = compose(over)
    data = synthetic_data(s["vocab"], max(200_000, 4 * cfg.loader.batch_size * (cfg.model.block_size + 1)))
    warm = max(1, min(a.warmup, a.steps - 1))  # the Trainer reports steps from 1
    torch._dynamo.reset()  # each row compiles afresh: a shared cache would hit the recompile limit and run eager
    torch.manual_seed(0)
    model = build_model(cfg, s["vocab"])  # on the CPU: FLOPs and parameters; on the device only for the hand loop
    ms_hand = hand_mem = None
    if model_name in a.hand:
        _reset_peak(device)
        ms_hand = 1000 * hand_loop(model.to(device), data, cfg, a.steps, warm, mode == "compiled", device)
        hand_mem = _peak_gib(device)
        model.to("cpu")
        torch._dynamo.reset()
        if device == "cuda":
            torch.cuda.empty_cache()  # decoderlab's peak memory counts its own model only
    _reset_peak(device)
    ms_ours = 1000 * decoderlab_loop(cfg, data, a.steps, warm)
    ours_mem = _peak_gib(device)
    tokens = cfg.loader.batch_size * cfg.model.block_size
    peak = peak_tflops(device)
    fpt = flops_per_token(model, cfg)

    def mfu(ms: float | None) -> float | None:
        return None if peak is None or ms is None else fpt * tokens / (ms / 1000) / (peak * 1e12)

    return dict(shape=shape, mode=mode, model=model_name, params=sum(p.numel() for p in model.parameters()),
                ms_hand=ms_hand, ms_decoderlab=ms_ours,
                tokens_per_s_hand=None if ms_hand is None else tokens / ms_hand * 1000,
                tokens_per_s_decoderlab=tokens / ms_ours * 1000, mfu_hand=mfu(ms_hand), mfu_decoderlab=mfu(ms_ours),
                peak_gib_hand=hand_mem, peak_gib_decoderlab=ours_mem,
                ratio=None if ms_hand is None else ms_hand / ms_ours)


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def vs_default(rows: list[dict]) -> None:
    """Add each row's decoderlab step time relative to the default model's, same shape and mode (1.3x targets)."""
    base = {(r["shape"], r["mode"]): r["ms_decoderlab"] for r in rows if r["model"] == "default" and "error" not in r}
    for r in rows:
        ref = base.get((r["shape"], r["mode"]))
        r["vs_default"] = None if ref is None or "error" in r else r["ms_decoderlab"] / ref


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, each met, not met, or not measured (no row for it)."""
    ok = {(r["shape"], r["mode"], r["model"]): r for r in rows if "error" not in r}
    out = []

    def verdict(name: str, value: float | None, good: bool, shown: str) -> None:
        out.append(f"- {name}: " + ("not measured" if value is None else f"{shown} ({'met' if good else 'NOT met'})"))

    d = ok.get(("gpt2", "compiled", "default"), {})
    r = d.get("ratio")
    verdict("decoderlab >= 0.95x the hand-written compiled loop (gpt2, default)", r, r is not None and r >= 0.95,
            f"{r:.3f}" if r else "")
    m = d.get("mfu_decoderlab")
    verdict("MFU >= 45% (gpt2, compiled, default)", m, m is not None and m >= 0.45, f"{100 * m:.1f}%" if m else "")
    for name in ("t5", "alibi", "llama"):
        v = ok.get(("gpt2", "compiled", name), {}).get("vs_default")
        verdict(f"{name} <= 1.3x the default model's step time (gpt2, compiled)", v, v is not None and v <= 1.3,
                f"{v:.2f}x" if v else "")
    return out


def write(rows: list[dict], a: argparse.Namespace, device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run: figures are not timings)"
    vs_default(rows)
    lines = [f"# GPU training throughput ({time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, "
             f"{a.steps} steps, mean over the steps after {a.warmup} warm-up)", "",
             "| shape | mode | model | ms/step hand | ms/step decoderlab | tokens/s decoderlab | MFU hand | "
             "MFU decoderlab | peak GiB decoderlab | decoderlab / hand | vs default |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(x: float | None, f: str) -> str:
        return "-" if x is None else format(x, f)

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['mode']} | {r['model']} | failed: {r['error'][:200]} |")
            continue
        lines.append(
            f"| {r['shape']} | {r['mode']} | {r['model']} | {fmt(r['ms_hand'], '.2f')} | {r['ms_decoderlab']:.2f} | "
            f"{r['tokens_per_s_decoderlab']:,.0f} | {fmt(r['mfu_hand'], '.1%')} | {fmt(r['mfu_decoderlab'], '.1%')} | "
            f"{fmt(r['peak_gib_decoderlab'], '.2f')} | {fmt(r['ratio'], '.3f')} | {fmt(r['vs_default'], '.2f')} |")
    if device == "cuda":
        lines += ["", "Targets (issue 10):", *targets(rows)]
    text = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.md").write_text(text)
    (out / "gpu.json").write_text(json.dumps({"device": name, "args": vars(a), "rows": rows}, indent=2))
    return text


def main(argv: list[str] | None = None) -> int:
    from decoderlab.components import POSITIONAL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=15, help="steps left out of the median (compile happens here)")
    p.add_argument("--shapes", nargs="*", default=["gpt2", "default"], choices=sorted(SHAPES))
    p.add_argument("--modes", nargs="*", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--models", nargs="*", default=["default", *POSITIONAL.names(), "llama"],
                   help="default, llama, or a positional encoding name")
    p.add_argument("--hand", nargs="*", default=None,
                   help="models that also run the hand-written loop (default: all of --models)")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (the default without CUDA): not a timing")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    a.hand = a.models if a.hand is None else a.hand
    device = "cuda" if torch.cuda.is_available() and not a.smoke else "cpu"
    if device == "cpu":  # smoke: one tiny shape, eager, what was asked for the rest
        a.smoke, a.shapes, a.modes = True, ["smoke"], ["eager"]
        a.warmup = min(a.warmup, max(0, a.steps - 2))
    quiet = {name: logging.getLogger(name).level for name in ("lightning", "lightning.pytorch", "lightning.fabric",
                                                                "decoderlab")}  # torch's warnings stay
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.backends.cuda.matmul.allow_tf32 = True
    rows: list[dict] = []
    try:
        for s in a.shapes:
            for m in a.modes:
                for name in a.models:
                    t0 = time.perf_counter()
                    try:
                        rows.append(measure(s, m, name, a, device))
                    except Exception as e:  # noqa: BLE001 - recorded in the row; the other rows still run
                        rows.append(dict(shape=s, mode=m, model=name,
                                         error=f"{type(e).__name__}: {e}".splitlines()[0]))
                    write(rows, a, device)  # after every row: a run cut short keeps what it measured
                    print(f"{s} {m} {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    finally:  # main() also runs in-process (tests): leave the loggers as they were
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
    print(write(rows, a, device))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
