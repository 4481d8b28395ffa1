"""``decoderlab-generate``: sample text from a trained run directory or checkpoint file.

    decoderlab-generate outputs/2026-11-26/13-12-06 --prompt "ROMEO:" --max-new-tokens 200
    decoderlab-generate run/checkpoints/last.ckpt --prompt "话说天下大势，" --temperature 0   # greedy
    decoderlab-generate run --context 256   # an encoding that extrapolates may look past block_size

The model uses the tokenizer bound to its checkpoint; ``--tokenizer`` only checks that a file is that same
tokenizer (a different one is an error naming both). Generation semantics (prompt cropping, sliding window, KV
cache) are those of :meth:`decoderlab.model.Decoder.generate`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.logging import RichHandler

from decoderlab import rundir
from decoderlab.checkpoint import load_decoder, read_checkpoint, require_same_tokenizer, resolve_checkpoint
from decoderlab.components.tokenizers import DECODERLAB_FILE, Tokenizer, load_tokenizer
from decoderlab.errors import UserError, exit_on_user_error
from decoderlab.model import Decoder
from decoderlab.plugins import load_plugins

log = logging.getLogger("decoderlab")


def load_for_generation(path: str | Path, tokenizer_path: str | Path | None = None) -> tuple[Decoder, Tokenizer, Path]:
    """The trained model and its bound tokenizer; any other tokenizer given or found must be the same one."""
    ckpt_path, run = resolve_checkpoint(path)
    model, tokenizer = load_decoder(read_checkpoint(ckpt_path), str(ckpt_path))
    others = [Path(tokenizer_path)] if tokenizer_path else []
    if run is not None and ((run / DECODERLAB_FILE).is_file() or (run / "tokenizer.json").is_file()):
        others.append(run)
    for other in others:
        require_same_tokenizer(tokenizer, load_tokenizer(other), f"checkpoint {ckpt_path}", f"tokenizer {other}")
    return model, tokenizer, ckpt_path


def default_prompt(ckpt_path: Path) -> str:
    """The run's own sample prompt (``sample.prompt``, else ``data.sample_prompt``), else a newline."""
    cfg_path = ckpt_path.parent.parent / rundir.CONFIG_FILE
    if cfg_path.is_file():
        cfg = OmegaConf.load(cfg_path)
        prompt = OmegaConf.select(cfg, "sample.prompt", default=None)
        prompt = prompt if prompt is not None else OmegaConf.select(cfg, "data.sample_prompt", default=None)
        if prompt:
            return str(prompt)
    return "\n"


def generate_text(
    model: Decoder, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, temperature: float = 1.0,
    top_k: int | None = None, top_p: float | None = None, seed: int = 1337, context: int | None = None,
    num_samples: int = 1, use_cache: bool = True,
) -> list[str]:
    """``num_samples`` texts: the whole prompt followed by its continuation."""
    unk_before = tokenizer.report().get("unk_tokens", 0)
    ids = torch.as_tensor(tokenizer.encode(prompt), dtype=torch.long)[None, :]  # (1, T)
    unk = tokenizer.report().get("unk_tokens", 0) - unk_before
    if unk:
        log.warning("%d prompt characters are not in the tokenizer's vocabulary: mapped to <unk>", unk)
    if ids.shape[1] == 0:
        raise UserError("the prompt is empty (no tokens): give --prompt TEXT")
    gen = torch.Generator().manual_seed(seed)
    out = model.generate(ids.expand(num_samples, -1), max_new_tokens, temperature, top_k, top_p, generator=gen,
                         use_cache=use_cache, context=context)  # (N, T' + new)
    new = out[:, out.shape[1] - max_new_tokens:] if max_new_tokens else out[:, :0]
    return [tokenizer.decode(ids[0].tolist() + row.tolist()) for row in new]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``decoderlab-generate``; a bad value is argparse's usage error."""
    p = argparse.ArgumentParser(prog="decoderlab-generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a run directory (uses checkpoints/last.ckpt) or a checkpoint file")
    p.add_argument("--prompt", default=None, help="text to continue (default: the run's sample prompt)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with this mass")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--context", type=int, default=None,
                   help="tokens the model conditions on (default: its block_size); past block_size only for "
                        "encodings that extrapolate")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--tokenizer", default=None, help="check that this tokenizer file is the checkpoint's own")
    p.add_argument("--no-cache", action="store_true", help="re-encode the window every step (reference path)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    checks = [(args.max_new_tokens >= 0, "--max-new-tokens must be >= 0"),
              (args.temperature >= 0, "--temperature must be >= 0 (0 = greedy)"),
              (args.top_k is None or args.top_k >= 1, "--top-k must be >= 1"),
              (args.top_p is None or 0 < args.top_p <= 1, "--top-p must be in (0, 1]"),
              (args.context is None or args.context >= 1, "--context must be >= 1"),
              (args.num_samples >= 1, "--num-samples must be >= 1")]
    for ok, msg in checks:
        if not ok:
            p.error(msg)
    return args


def setup_logging() -> None:
    """Warnings (e.g. prompt characters missing from the vocabulary) on stderr, so stdout holds only the text."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(show_time=False,
                        show_path=False, console=Console(stderr=True))])


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``decoderlab-generate``: prints the generated text on stdout."""
    args = parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    with exit_on_user_error():
        load_plugins()  # a checkpoint may use a plugin's component
        model, tokenizer, ckpt = load_for_generation(args.path, args.tokenizer)
        prompt = args.prompt if args.prompt is not None else default_prompt(ckpt)
        texts = generate_text(model, tokenizer, prompt, args.max_new_tokens, args.temperature, args.top_k,
                              args.top_p, args.seed, args.context, args.num_samples, not args.no_cache)
    for i, text in enumerate(texts):
        if i:
            sys.stdout.write("\n" + "-" * 40 + "\n")
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
