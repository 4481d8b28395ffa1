"""Training throughput: decoderlab's real training path against hand-written PyTorch loops, in one run.

Three ways to train the same batch shape for the same number of steps, timed per step in the same process:

- ``plain``: a hand-written loop (nanoGPT's get_batch + the same AdamW + clip + LR schedule) on decoderlab's own
  :class:`Decoder`: the identical model, so the ratio isolates framework overhead (Lightning, data module,
  logging, callbacks).
- ``decoderlab``: the real path: Hydra-composed config, cached memmap data module, LitDecoder, the Lightning
  Trainer with decoderlab's callbacks, checkpoint IO and CSV logger (validation off).
- ``nanogpt``: the same loop on an independent hand-written nanoGPT model (the reference implementation).

    python benchmarks/bench_throughput.py                       # default model, 300 timed steps
    python benchmarks/bench_throughput.py --zoo                 # + every positional encoding, vs the default
    python benchmarks/bench_throughput.py --overrides model/positional=rope

Prints a table and writes ``benchmarks/results/throughput.{json,md}`` (``throughput_zoo.{json,md}`` with ``--zoo``). Timings: median ms/step over the timed
steps (after warm-up), repeated ``--repeats`` times interleaved (plain, decoderlab, nanogpt, plain, ...) so that
drift in machine load affects all alike; the ratio is plain / decoderlab ms per step (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def compose(overrides: list[str]):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from decoderlab.config import register_schema
    from decoderlab.plugins import load_plugins
    from decoderlab.train import conf_dir

    load_plugins()
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base=None):
        return hcompose("train", overrides=overrides)


class NanoGPT(nn.Module):
    """nanoGPT's model, written out independently (learned positions, pre-norm, GELU MLP, no biases)."""

    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, block: int):
        super().__init__()
        self.h = n_heads
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(d, bias=False), "qkv": nn.Linear(d, 3 * d, bias=False),
            "proj": nn.Linear(d, d, bias=False), "ln2": nn.LayerNorm(d, bias=False),
            "fc": nn.Linear(d, 4 * d, bias=False), "out": nn.Linear(4 * d, d, bias=False)}) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(x.shape[-1], dim=2)
            q, k, v = (t.view(B, T, self.h, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + b["proj"](y)
            x = x + b["out"](F.gelu(b["fc"](b["ln2"](x)), approximate="tanh"))
        return self.head(self.ln_f(x))


def plain_loop(model: nn.Module, ids: np.ndarray, cfg, steps: int) -> list[float]:
    """A hand-written training loop; returns the duration of every step (seconds)."""
    from decoderlab.lit import lr_at, use_fused

    B, T, o = cfg.loader.batch_size, cfg.model.block_size, cfg.optim
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=use_fused(o.fused, decay + rest))
    rng = np.random.default_rng(0)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        ix = rng.integers(0, len(ids) - T - 1, size=B)
        w = torch.from_numpy(np.stack([ids[i:i + T + 1] for i in ix]).astype(np.int64))
        x, y = w[:, :-1], w[:, 1:]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o, steps)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def decoderlab_loop(cfg, data, steps: int) -> list[float]:
    """The real decoderlab path (Trainer + LitDecoder + data module + callbacks + CSV logger)."""
    from lightning.pytorch.callbacks import Callback

    from decoderlab.data.module import DecoderDataModule
    from decoderlab.fit import TrainTimer, build_lit, build_loggers, build_trainer
    from decoderlab.runner import build_model

    class Clock(Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *args) -> None:
            self.ends.append(time.perf_counter())

    model = build_model(cfg, data.tokenizer.vocab_size)
    dm = DecoderDataModule(data, cfg.model.block_size, cfg.loader.batch_size, 64, cfg.seed)
    lit = build_lit(cfg, model, data.tokenizer, max_steps=steps)
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(cfg, Path(out), build_loggers(cfg, Path(out), {}), TrainTimer())
        trainer.callbacks.append(clock)
        trainer.fit(lit, datamodule=dm)
    return list(np.diff(clock.ends))


def median_ms(times: list[float], warmup: int) -> float:
    return 1000 * statistics.median(times[warmup:])


def bench(overrides: list[str], steps: int, warmup: int, repeats: int, with_nano: bool) -> dict:
    from decoderlab.runner import build_data, build_model

    base = ["logger=csv", f"trainer.max_steps={steps}", "trainer.enable_progress_bar=false",
            "+trainer.extra.limit_val_batches=0", "trainer.ckpt_every_n_steps=1000000"]
    cfg = compose(base + overrides)
    data, _ = build_data(cfg)
    ids = np.asarray(data.train)
    m = cfg.model
    res: dict[str, list[float]] = {"plain": [], "decoderlab": [], "nanogpt": []}
    for _ in range(repeats):
        torch.manual_seed(0)
        res["plain"].append(median_ms(plain_loop(build_model(cfg, data.tokenizer.vocab_size), ids, cfg, steps),
                                      warmup))
        res["decoderlab"].append(median_ms(decoderlab_loop(cfg, data, steps), warmup))
        if with_nano:
            nano = NanoGPT(data.tokenizer.vocab_size, m.d_model, m.n_layers, m.n_heads, m.block_size)
            res["nanogpt"].append(median_ms(plain_loop(nano, ids, cfg, steps), warmup))
    out = {k: statistics.median(v) for k, v in res.items() if v}
    tokens = cfg.loader.batch_size * m.block_size
    out["tokens_per_s_decoderlab"] = tokens / out["decoderlab"] * 1000
    out["ratio_plain_over_decoderlab"] = out["plain"] / out["decoderlab"]
    out["runs_ms"] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--zoo", action="store_true", help="also time every registered positional encoding")
    p.add_argument("--overrides", nargs="*", default=[])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import logging

    logging.disable(logging.WARNING)
    rows = {"default": bench(a.overrides, a.steps, a.warmup, a.repeats, with_nano=True)}
    if a.zoo:
        from decoderlab.components import POSITIONAL

        for name in POSITIONAL.names():
            rows[f"model/positional={name}"] = bench(a.overrides + [f"model/positional={name}"], a.steps, a.warmup,
                                                     max(1, a.repeats - 1), with_nano=False)
    write(rows, a)


def write(rows: dict, a: argparse.Namespace) -> None:
    base = rows["default"]["decoderlab"]
    lines = [f"# Training throughput ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {a.threads} threads, "
             f"{a.steps} steps, median of {a.repeats})", "",
             "| variant | plain loop ms/step | decoderlab ms/step | nanoGPT ms/step | decoderlab tokens/s | "
             "plain/decoderlab | step time vs default |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        nano = f"{r['nanogpt']:.2f}" if "nanogpt" in r else "-"
        lines.append(f"| {name} | {r['plain']:.2f} | {r['decoderlab']:.2f} | {nano} | "
                     f"{r['tokens_per_s_decoderlab']:,.0f} | {r['ratio_plain_over_decoderlab']:.3f} | "
                     f"{r['decoderlab'] / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "throughput_zoo" if a.zoo else "throughput"  # a default-only run never overwrites the zoo's table
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2))
    if not math.isfinite(rows["default"]["ratio_plain_over_decoderlab"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
