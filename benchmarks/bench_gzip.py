"""The package's gzip line reader (`open_binary`) against isal's `igzip.open`, in one run.

    python benchmarks/bench_gzip.py [--input FILE.gz] [--copies 50] [--repeat 10]

Without --input, the fixture trees are used; with ../shared present, pass
`--input ../shared/data/oasst/en_100_tree.jsonl.gz`. The file's lines are repeated --copies times
into one gzip file (level 6), then both sides count its lines, alternating; the best of --repeat
is reported, with the ratio. Both must count the same lines.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import tempfile
import time
from pathlib import Path

from isal import igzip

from oasst_data.readers.files import _CHUNK, open_binary

log = logging.getLogger("bench_gzip")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "oasst" / "trees.jsonl.gz"


def count_igzip(path: Path) -> int:
    with igzip.open(io.BufferedReader(path.open("rb", buffering=0), buffer_size=_CHUNK), "rb") as handle:
        return sum(1 for _ in handle)


def count_package(path: Path) -> int:
    with open_binary(path) as handle:
        return sum(1 for _ in handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=FIXTURE)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lines = gzip.decompress(args.input.read_bytes()) * args.copies
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.jsonl.gz"
        path.write_bytes(gzip.compress(lines, compresslevel=6, mtime=0))
        best = {"igzip.open": float("inf"), "package": float("inf")}
        counts = set()
        for _ in range(args.repeat):
            for name, count in (("igzip.open", count_igzip), ("package", count_package)):
                start = time.perf_counter()
                counts.add(count(path))
                best[name] = min(best[name], time.perf_counter() - start)
        if len(counts) != 1:
            log.error("the readers disagree on the line count: %s", sorted(counts))
            return 1
        log.info("%s x%d: %.1f MB gz, %.1f MB of lines, %d lines", args.input.name, args.copies,
                 path.stat().st_size / 1e6, len(lines) / 1e6, counts.pop())
        for name, seconds in best.items():
            log.info("  %-10s %.4f s  %.0f MB/s", name, seconds, len(lines) / 1e6 / seconds)
        log.info("  package / igzip.open time: %.2f", best["package"] / best["igzip.open"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
