"""Benchmark the recursion-free path for deep tree lines against the same messages as flat lines.

    python benchmarks/bench_deep_tree.py [--depths 1000 10000 50000] [--repeat 3] [--workdir DIR]

For each depth it writes one conversation chain of that many messages twice: as one message-tree
line nested that deep (past ~1,000 levels msgspec gives up and the reader re-reads the line with
`readers/deep_json.py`), and as flat message lines (the baseline: msgspec, one message a line,
trees rebuilt without recursion). Both go through `ThreadExtractor` as a user's export would; the
run stops unless both give the same threads. Times are medians of --repeat alternating runs in
this process (inputs written beforehand, imports excluded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from oasst_data.config import ThreadConfig
from oasst_data.serialize import format_training
from oasst_data.threads import ThreadExtractor

log = logging.getLogger("bench_deep_tree")
TEXT = "A sentence of ordinary length, as conversation turns have, with some punctuation: {}."


def message(index: int) -> dict:
    return {
        "message_id": f"m{index}",
        "parent_id": f"m{index - 1}" if index else None,
        "text": TEXT.format(index),
        "role": "prompter" if index % 2 == 0 else "assistant",
        "lang": "en",
        "review_result": True,
    }


def write_inputs(depth: int, folder: Path) -> tuple[Path, Path]:
    """(nested, flat): the chain m0 -> m1 -> ... as one nested tree line and as flat lines."""
    head = {"message_tree_id": f"chain-{depth}", "tree_state": "ready_for_export"}
    nested, flat = folder / f"nested-{depth}.jsonl", folder / f"flat-{depth}.jsonl"
    with nested.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(head)[:-1] + ', "prompt": ')
        for index in range(depth):
            handle.write(json.dumps(message(index))[:-1] + ', "replies": [')
        handle.write("]}" * depth + "}\n")
    with flat.open("w", encoding="utf-8") as handle:
        for index in range(depth):
            handle.write(json.dumps(message(index) | head) + "\n")
    return nested, flat


def extract(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    digest = hashlib.sha256()
    for thread in ThreadExtractor(ThreadConfig(val_split=0.0)).run([path]):
        digest.update(format_training(thread.turns).encode("utf-8"))
    return time.perf_counter() - start, digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.workdir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        log.info("| messages | nested line | deep path | flat lines (baseline) | ratio |")
        log.info("|---:|---:|---:|---:|---:|")
        for depth in args.depths:
            nested, flat = write_inputs(depth, folder)
            deep_times, flat_times = [], []
            for _ in range(args.repeat):
                seconds, deep_digest = extract(nested)
                deep_times.append(seconds)
                seconds, flat_digest = extract(flat)
                flat_times.append(seconds)
                if deep_digest != flat_digest:
                    raise SystemExit(f"depth {depth}: the nested line and the flat lines give different threads")
            deep, baseline = statistics.median(deep_times), statistics.median(flat_times)
            size = nested.stat().st_size
            log.info(
                "| %s | %.1f MB | %.3f s (%.1f MB/s) | %.3f s | %.1fx |",
                f"{depth:,}", size / 1e6, deep, size / deep / 1e6, baseline, deep / baseline,
            )


if __name__ == "__main__":
    main()
