"""Alpaca rows from a Parquet folder: the package's pyarrow reader against `datasets`, in one run.

    python benchmarks/bench_alpaca.py [--rows 500000] [--repeat 3] [--source ../shared/data/alpaca/alpaca_en_demo.json]

A folder `data/train-0000N-of-00004.parquet` is written from the records of --source (the
fixture records without it) repeated to --rows, in row groups of 50,000. The baseline is what the
reader did before (and what `datasets` users do): `load_dataset(folder, split="train")` into a
fresh cache, then every row converted to the typed record. Both must give the same records.
Reported: best of --repeat for each side (alternating), the ratio, and the cache `datasets` wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from oasst_data.readers.alpaca import AlpacaReader
from oasst_data.records import AlpacaRecord

log = logging.getLogger("bench_alpaca")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "alpaca" / "alpaca.json"


def write_folder(folder: Path, records: list[dict], rows: int) -> None:
    (folder / "data").mkdir(parents=True)
    columns = {name: [(r.get(name) or "") for r in records] for name in ("instruction", "input", "output")}
    parts = 4
    for part in range(parts):
        count = rows // parts
        table = pa.table({name: [values[i % len(values)] for i in range(part * count, (part + 1) * count)] for name, values in columns.items()})
        pq.write_table(table, folder / "data" / f"train-{part:05d}-of-{parts:05d}.parquet", row_group_size=50_000)


def read_package(folder: Path) -> list[AlpacaRecord]:
    return [located.record for located in AlpacaReader(str(folder))]


def read_datasets(folder: Path, cache: Path) -> list[AlpacaRecord]:
    import datasets

    dataset = datasets.load_dataset(str(folder), split="train", cache_dir=str(cache))
    return [msgspec.convert(row, AlpacaRecord) for row in dataset]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", type=Path, default=FIXTURE, help="a JSON array of Alpaca records")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import datasets

    datasets.disable_progress_bars()
    records = json.loads(args.source.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="bench-alpaca-") as work:
        folder = Path(work) / "alpaca"
        write_folder(folder, records, args.rows)
        package, baseline, cache_size = [], [], 0
        for attempt in range(args.repeat):
            start = time.perf_counter()
            ours = read_package(folder)
            package.append(time.perf_counter() - start)
            cache = Path(work) / f"cache-{attempt}"
            start = time.perf_counter()
            theirs = read_datasets(folder, cache)
            baseline.append(time.perf_counter() - start)
            cache_size = folder_bytes(cache)
            shutil.rmtree(cache)
            if ours != theirs:
                log.error("the two readers gave different records")
                return 1
        data = folder_bytes(folder / "data")
    best_package, best_baseline = min(package), min(baseline)
    log.info("| rows | Parquet | datasets.load_dataset + rows (baseline) | pyarrow reader | baseline / reader | cache written by the baseline |")
    log.info("|---:|---:|---:|---:|---:|---:|")
    log.info(
        "| %s | %.1f MB | %.2f s | %.2f s | %.2fx | %.1f MB |",
        f"{args.rows:,}", data / 1e6, best_baseline, best_package, best_baseline / best_package, cache_size / 1e6,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
