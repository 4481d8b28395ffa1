"""Token-cache building: decoderlab's streamed, parallel build against HF ``tokenizers``' own ``encode_batch``.

A JSONL corpus is generated from ``../shared/data/tinyshakespeare.txt`` (its paragraphs, repeated; one record
each). A byte-level BPE is fitted once on it; then, each in a fresh process (so thread and fork state is clean):

- ``encode_batch``: the texts already in memory, one ``Tokenizer.encode_batch`` call with ``RAYON_NUM_THREADS=n``
  (HF's own parallelism over n threads; reading and splitting the corpus not counted), timed bare and with
  reading the ids out of the encodings and freeing them (``[e.ids for e in enc]; del enc``: what any user of it
  does next).
- ``decoderlab``: ``prepare`` with ``tokenizer=pretrained`` (that BPE) and ``data.num_proc=n``: reading and
  decompressing JSON, the document split, n worker processes, writing the memmaps. ``build`` = the tokenizing pass,
  ``total`` = ``prepare`` from a cold cache (adds hashing the files for the cache key).

    python benchmarks/bench_data.py --mb 8 --repeats 3  # 1 and 2 processes, an 8 MB corpus, best of 3
    python benchmarks/bench_data.py --rss-gb 1      # + peak RSS building the cache of a generated 1 GB corpus

Writes ``benchmarks/results/data.{json,md}`` (sections kept across runs). The ratio is decoderlab build /
encode_batch (+ .ids) seconds (target <= 1.3); the bare ratio is given too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SOURCE = ROOT.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


def source_text() -> str:
    for p in (SOURCE, Path("/work/shared/data/tinyshakespeare.txt")):
        if p.is_file():
            return p.read_text(encoding="utf-8")
    raise SystemExit(f"tinyshakespeare.txt not found at {SOURCE}")


def write_corpus(path: Path, megabytes: float) -> int:
    """A JSONL file of about ``megabytes`` MB: tinyshakespeare's paragraphs, repeated, numbered so they differ."""
    paras = [p for p in source_text().split("\n\n") if p.strip()]
    lines = [json.dumps({"text": p}) + "\n" for p in paras]
    block = "".join(lines).encode()
    n, rep = 0, 0
    with open(path, "wb") as f:
        while n < megabytes * 1e6:
            f.write(json.dumps({"text": f"Copy {rep}."}).encode() + b"\n" + block)
            n += len(block)
            rep += 1
    return path.stat().st_size


def child(args: argparse.Namespace) -> None:
    """Run one measurement in this (fresh) process and print its figures as JSON."""
    if args.child == "encode_batch":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(args.tokenizer)
        texts = [json.loads(line)["text"] for line in open(args.corpus, encoding="utf-8")]
        t0 = time.perf_counter()
        enc = tok.encode_batch(texts, add_special_tokens=False)
        bare = time.perf_counter() - t0
        ids = [e.ids for e in enc]  # what any user of encode_batch reads next
        del enc  # and frees: the Encoding objects (offsets, token strings) take ~10% of the encode time to free
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "bare": bare, "tokens": sum(map(len, ids))}))
        return
    from decoderlab.components.tokenizers import TOKENIZERS
    from decoderlab.data import CORPORA, prepare

    corpus = CORPORA.build({"name": "text", "paths": [args.corpus], "num_proc": args.num_proc,
                            "cache_dir": tempfile.mkdtemp(dir=args.work)})
    t0 = time.perf_counter()
    data = prepare(corpus, TOKENIZERS.build({"name": "pretrained", "path": args.tokenizer}), 64)
    total = time.perf_counter() - t0
    kb = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({"seconds": data.meta["build"]["seconds"], "total": total,
                      "tokens": data.meta["n_train"] + data.meta["n_val"], "text_bytes": data.meta["text_bytes"],
                      "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb / 1e6,
                      "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kb / 1e6}))


def measure(kind: str, n: int, corpus: Path, tokenizer: Path, work: Path) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(n), OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--child", kind, "--num-proc", str(n), "--corpus", str(corpus),
           "--tokenizer", str(tokenizer), "--work", str(work)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_tokenizer(corpus: Path, work: Path) -> tuple[Path, float]:
    """Fit the byte-level BPE once (decoderlab's own fit on the training documents); returns its file and seconds."""
    from decoderlab.components.tokenizers import TOKENIZERS
    from decoderlab.data import CORPORA, prepare

    t0 = time.perf_counter()
    data = prepare(CORPORA.build({"name": "text", "paths": [str(corpus)], "cache_dir": str(work / "fit")}),
                   TOKENIZERS.build({"name": "bpe", "vocab_size": 4096}), 64)
    return data.directory / "tokenizer.json", time.perf_counter() - t0


def throughput(args: argparse.Namespace, work: Path) -> dict:
    corpus = work / "corpus.jsonl"
    size = write_corpus(corpus, args.mb)
    tok, fit_s = fit_tokenizer(corpus, work)
    load = [os.getloadavg()[0]]  # the machine may be shared: other jobs' load is reported with the figures
    rows = []
    for n in (1, 2):
        runs = {"encode_batch": [], "decoderlab": []}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            for kind in runs:
                runs[kind].append(measure(kind, n, corpus, tok, work))
        best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
        hf, ours = best["encode_batch"], best["decoderlab"]
        assert hf["tokens"] == ours["tokens"], (hf["tokens"], ours["tokens"])
        rows.append({"processes": n, "encode_batch_s": round(hf["bare"], 3), "encode_batch_ids_s": round(hf["seconds"], 3),
                     "build_s": round(ours["seconds"], 3), "ratio_bare": round(ours["seconds"] / hf["bare"], 3),
                     "total_s": round(ours["total"], 3), "ratio": round(ours["seconds"] / hf["seconds"], 3),
                     "mb_per_s": round(ours["text_bytes"] / 1e6 / ours["seconds"], 2), "tokens": ours["tokens"]})
        print(rows[-1], flush=True)
    load.append(os.getloadavg()[0])
    return {"corpus_mb": round(size / 1e6, 1), "vocab": 4096, "fit_and_first_build_s": round(fit_s, 2),
            "repeats": args.repeats, "load_avg_1min": [round(x, 2) for x in load], "rows": rows}


def peak_rss(args: argparse.Namespace, work: Path) -> dict:
    small = work / "small.jsonl"
    write_corpus(small, 2)
    tok, _ = fit_tokenizer(small, work)
    corpus = work / "big.jsonl"
    size = write_corpus(corpus, args.rss_gb * 1000)
    r = measure("decoderlab", 2, corpus, tok, work)
    print(r, flush=True)
    return {"corpus_gb": round(size / 1e9, 2), "processes": 2, "rss_main_mb": round(r["rss_main_mb"]),
            "rss_worker_mb": round(r["rss_worker_mb"]), "build_s": round(r["seconds"], 1),
            "mb_per_s": round(r["text_bytes"] / 1e6 / r["seconds"], 2), "tokens": r["tokens"],
            "date": time.strftime("%Y-%m-%d")}


def write_results(new: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "data.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    res.update(new)
    path.write_text(json.dumps(res, indent=2))
    md = [f"# Token-cache building ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, byte-level BPE)", ""]
    if "throughput" in res:
        t = res["throughput"]
        md += [f"JSONL corpus of {t['corpus_mb']} MB, BPE vocab {t['vocab']}, best of {t['repeats']}; fitting the "
               f"BPE and the first build took {t['fit_and_first_build_s']} s; 1-minute load average before / after: "
               f"{t.get('load_avg_1min', '?')} (on {os.cpu_count()} cores).", "",
               "| processes | HF encode_batch s | + reading .ids, freeing s | decoderlab build s | ratio (vs + .ids) | "
               "ratio (vs bare) | MB/s | cold prepare s | tokens |", "|---|---|---|---|---|---|---|---|---|"]
        md += [f"| {r['processes']} | {r['encode_batch_s']} | {r['encode_batch_ids_s']} | {r['build_s']} | "
               f"{r['ratio']} | {r['ratio_bare']} | {r['mb_per_s']} | {r['total_s']} | {r['tokens']:,} |"
               for r in t["rows"]]
    if "rss" in res:
        r = res["rss"]
        md += ["", f"Peak RSS building the cache of a {r['corpus_gb']} GB JSONL corpus with {r['processes']} "
               f"processes: main {r['rss_main_mb']} MB, largest worker {r['rss_worker_mb']} MB "
               f"({r['build_s']} s, {r['mb_per_s']} MB/s, {r['tokens']:,} tokens; measured {r.get('date', '?')})."]
    (RESULTS / "data.md").write_text("\n".join(md) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=16, help="size of the throughput corpus")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rss-gb", type=float, default=0, help="also measure peak RSS on a corpus this large")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--num-proc", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_data-") as tmp:
        work = Path(tmp)
        new = {} if args.skip_throughput else {"throughput": throughput(args, work)}
        if args.rss_gb:
            new["rss"] = peak_rss(args, work)
    write_results(new)


if __name__ == "__main__":
    main()
