"""Sampling with a KV cache: eager against ``torch.compile``d decoding, on the default model.

Why the sample at the end of training stays eager under ``trainer.compile=true``: compiling cached decoding costs a
one-off compile (a prefill graph and the decode-step graphs, reused afterwards without recompiling), which pays only
for long generations. Prints and writes ``benchmarks/results/generate.{md,json}``: eager ms/token, the compiled
first pass (cold compiles included: Inductor's caches off), compiled ms/token afterwards, the number of graphs and the break-even length.

    python benchmarks/bench_generate.py [--tokens 200] [--backend inductor]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch._inductor.config
from torch._dynamo.utils import counters

from decoderlab.model import Decoder, KVCache, ModelConfig

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def decode(forward, model: Decoder, prompt: torch.Tensor, tokens: int) -> float:
    """Greedy cached decoding of ``tokens`` tokens through ``forward``; seconds."""
    t0 = time.perf_counter()
    with torch.no_grad():
        caches = [KVCache() for _ in model.blocks]
        logits = forward(prompt, caches)
        for _ in range(tokens - 1):
            logits = forward(logits[:, -1:].argmax(-1), caches)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    model = Decoder(ModelConfig(block_size=a.tokens + 16), 65).eval()  # the default sizes; room for the sample
    prompt = torch.randint(0, 65, (1, 10))
    decode(model, model, prompt, 8)  # warm the eager path
    eager = decode(model, model, prompt, a.tokens)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend=a.backend)
    with torch._inductor.config.patch(force_disable_caches=True):  # cold, as a fresh machine's first run pays
        first = decode(compiled, model, prompt, a.tokens)
        again = decode(compiled, model, prompt, a.tokens)
    graphs = counters["stats"]["unique_graphs"]
    per_eager, per_compiled = eager / a.tokens, again / a.tokens
    breakeven = (first - again) / max(per_eager - per_compiled, 1e-9)
    row = dict(tokens=a.tokens, backend=a.backend, threads=torch.get_num_threads(), eager_s=eager,
               eager_ms_per_token=1000 * per_eager, compiled_first_s=first, compiled_again_s=again,
               compiled_ms_per_token=1000 * per_compiled, graphs=graphs, breakeven_tokens=breakeven)
    text = (f"# Cached sampling, default model ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
            f"{row['threads']} threads, {a.backend})\n\n"
            "| tokens | eager s | eager ms/token | compiled first pass s | compiled again s | compiled ms/token | "
            "graphs | break-even tokens |\n|---|---|---|---|---|---|---|---|\n"
            f"| {a.tokens} | {eager:.2f} | {1000 * per_eager:.2f} | {first:.1f} | {again:.2f} | "
            f"{1000 * per_compiled:.2f} | {graphs} | {breakeven:,.0f} |\n")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate.md").write_text(text)
    (out / "generate.json").write_text(json.dumps(row, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
