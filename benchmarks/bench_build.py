"""Benchmark `oasst-data build` against a plain baseline, in one run, at two input sizes 10x apart.

Baseline (what a straightforward script does): stdlib `json.loads` per line, recursive
traversal with the reference's SFT rule, serialize every thread, then ONE
`tokenizer(strings, add_special_tokens=False)` batch call on all serialized strings.
The build does strictly more (loss masks, buckets, shuffling, Parquet, manifest), so a ratio
above 1 means the build is faster than just tokenizing the naive way.

Each measurement runs in a fresh subprocess; peak RSS is that child's ru_maxrss.

    python benchmarks/bench_build.py --sizes-mb 15 150 [--tokenizer PATH] [--workdir DIR]

The scaled exports are made from the fixtures by `benchmarks/make_scaled_export.py --branch`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED_TOKENIZER = REPO.parent / "shared" / "tokenizers" / "gpt-neox-20b"
log = logging.getLogger("bench_build")

BASELINE = r'''
import json, sys, time
from transformers import AutoTokenizer
path, tokenizer_path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
tok = AutoTokenizer.from_pretrained(tokenizer_path)
tok.add_special_tokens({"additional_special_tokens": ["<|prompter|>", "<|assistant|>", "<|system|>", "<|prefix_begin|>", "<|prefix_end|>"]})
sys.path.insert(0, sys.argv[3])
from reference_walk import keep_tree, visit
texts = []
with open(path, encoding="utf-8") as handle:
    for line in handle:
        tree = json.loads(line)
        if keep_tree(tree):
            visit(tree["prompt"], [], texts)
ids = tok(texts, add_special_tokens=False)["input_ids"]
tokens = sum(len(i) for i in ids)
print(json.dumps({"threads": len(texts), "tokens": tokens, "seconds": time.perf_counter() - start}))
'''

BUILD = r'''
import json, sys, time
from oasst_data.shards import BuildConfig, build_shards
path, tokenizer_path, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
start = time.perf_counter()
result = build_shards(BuildConfig(inputs=[path], tokenizer=tokenizer_path, workers=workers), out, overwrite=True)
totals = result.manifest["totals"]
print(json.dumps({
    "threads": result.manifest["funnel"]["threads"],
    "rows": sum(t["rows"] for t in totals.values()),
    "tokens": sum(t["tokens"] for t in totals.values()),
    "seconds": time.perf_counter() - start,
    "shards": sum(t["shards"] for t in totals.values()),
}))
'''


def peak_rss_of(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter; its JSON line plus wall time and its own peak RSS (wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed:\n{stderr[-3000:]}")
    payload = json.loads(stdout.strip().splitlines()[-1])
    payload["wall_seconds"] = wall
    payload["peak_rss_mib"] = usage.ru_maxrss / 1024
    return payload


def make_export(size_mb: int, workdir: Path) -> Path:
    # --branch: real-shaped trees (~5.8 threads a tree sharing prefixes), as a build meets them.
    path = workdir / f"scaled-branch-{size_mb}mb.jsonl"
    if not path.exists():
        command = [sys.executable, str(HERE / "make_scaled_export.py"), "--out", str(path), "--target-mb", str(size_mb), "--branch"]
        subprocess.run(command, check=True)
    return path


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="*", default=[15, 150])
    parser.add_argument("--tokenizer", default=str(SHARED_TOKENIZER if SHARED_TOKENIZER.exists() else REPO / "fixtures" / "tokenizer"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument("--export", type=Path, nargs="*", default=[], help="Also measure these existing exports (.jsonl).")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="oasst-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    exports = [make_export(size, workdir) for size in args.sizes_mb] + list(args.export)
    for export in exports:
        size = export.stem
        megabytes = export.stat().st_size / 1e6
        baseline = peak_rss_of(BASELINE, str(export), args.tokenizer, str(HERE))
        out = workdir / f"shards-{size}"
        build = peak_rss_of(BUILD, str(export), args.tokenizer, str(out), str(args.workers))
        shutil.rmtree(out, ignore_errors=True)
        row = {
            "input_mb": round(megabytes, 1),
            "threads": build["threads"],
            "baseline_threads": baseline["threads"],
            "tokens": build["tokens"],
            "baseline_s": round(baseline["wall_seconds"], 2),
            "build_s": round(build["wall_seconds"], 2),
            "speedup": round(baseline["wall_seconds"] / build["wall_seconds"], 2),
            "build_threads_per_s": round(build["threads"] / build["wall_seconds"]),
            "build_tokens_per_s": round(build["tokens"] / build["wall_seconds"]),
            "build_mb_per_s": round(megabytes / build["wall_seconds"], 2),
            "baseline_peak_rss_mib": round(baseline["peak_rss_mib"]),
            "build_peak_rss_mib": round(build["peak_rss_mib"]),
            "shards": build["shards"],
        }
        results.append(row)
        log.info(json.dumps(row))
    header = "| input MB | threads | tokens | baseline s | build s | speedup | threads/s | tokens/s | MB/s | baseline peak MiB | build peak MiB |"
    lines = [header, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r['input_mb']} | {r['threads']:,} | {r['tokens']:,} | {r['baseline_s']} | {r['build_s']} | {r['speedup']}x | "
            f"{r['build_threads_per_s']:,} | {r['build_tokens_per_s']:,} | {r['build_mb_per_s']} | {r['baseline_peak_rss_mib']:,} | {r['build_peak_rss_mib']:,} |"
        )
    log.info("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
