"""Benchmark `oasst-data stats` on a scaled export against one plain read with the package's reader.

Each measurement runs in a fresh subprocess; its time is measured inside the child (imports
excluded) and its peak RSS is the child's own ru_maxrss. Measured, per input:

  read      OasstExportReader over the file once, counting trees and messages (the floor)
  threads   ThreadExtractor.run: the same read plus the filters and the funnel
  stats     export_stats (the same one pass + flat rows spilled + polars) and its JSON/HTML
  stats+tok the same with --tokenizer (token counts the way a build counts them), optional

    python benchmarks/bench_stats.py --export FILE [--export FILE2] [--tokenizer PATH] [--repeat 1]
    python benchmarks/bench_stats.py --make-mb 15 150 [--workdir DIR]   # scaled exports made here

`--make-mb` writes exports of about that size with benchmarks/make_scaled_export.py (the
fixture trees with new ids and the real export's text lengths; without --branch, as
bench_threads.py uses it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
log = logging.getLogger("bench_stats")

PRELUDE = r'''
import json, resource, sys, time
from pathlib import Path
path = sys.argv[1]
def done(**figures):
    figures["seconds"] = round(time.perf_counter() - start, 3)
    figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(figures))
'''

READ = PRELUDE + r'''
from oasst_data.readers.oasst import OasstExportReader
from oasst_data.traversal import iter_messages
start = time.perf_counter()
trees = messages = 0
for located in OasstExportReader([Path(path)]):
    trees += 1
    for _ in iter_messages(located.tree.prompt):
        messages += 1
done(trees=trees, messages=messages)
'''

THREADS = PRELUDE + r'''
from oasst_data.threads import ThreadExtractor
start = time.perf_counter()
extractor = ThreadExtractor()
threads = sum(1 for _ in extractor.run([path]))
done(trees=extractor.funnel.trees_read, threads=threads)
'''

STATS = PRELUDE + r'''
import tempfile, os
from oasst_data.stats import export_stats, write_report
tokenizer = sys.argv[2] if len(sys.argv) > 2 else None
start = time.perf_counter()
report = export_stats([path], tokenizer=tokenizer)
out = tempfile.mkdtemp()
write_report(report, os.path.join(out, "s.json"), os.path.join(out, "s.html"), os.path.join(out, "s.md"))
e = report["export"]
done(trees=e["totals"]["trees"], messages=e["totals"]["messages"], threads=e["totals"]["threads"],
     tokens=e["threads"]["tokens_total"])
'''


def make_export(target_mb: float, out: Path) -> Path:
    """An export of about `target_mb` MB (benchmarks/make_scaled_export.py)."""
    maker = HERE / "make_scaled_export.py"
    subprocess.run([sys.executable, str(maker), "--out", str(out), "--target-mb", str(target_mb)], check=True)
    return out


def run(script: str, *args: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench(path: Path, tokenizer: str | None, repeat: int) -> dict:
    size_mb = path.stat().st_size / 1e6
    cases = {"read": (READ,), "threads": (THREADS,), "stats": (STATS,)}
    if tokenizer:
        cases["stats+tok"] = (STATS, tokenizer)
    figures = {}
    for name, (script, *extra) in cases.items():
        runs = [run(script, str(path), *extra) for _ in range(repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        best["mb_per_s"] = round(size_mb / best["seconds"], 1)
        figures[name] = best
        log.info("%s %s: %s", path.name, name, best)
    return {"file": path.name, "mb": round(size_mb, 1), "results": figures}


def table(rows: list[dict]) -> str:
    lines = [
        "| input | run | seconds | MB/s | peak RSS (MiB) | time vs read | RSS vs read |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        base = row["results"]["read"]
        for name, r in row["results"].items():
            lines.append(
                f"| {row['file']} ({row['mb']} MB) | {name} | {r['seconds']:.2f} | {r['mb_per_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                f"{r['seconds'] / base['seconds']:.2f}x | {r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", action="append", default=[], help="An export file (repeatable).")
    parser.add_argument("--make-mb", type=float, nargs="*", default=[], help="Make scaled exports of these sizes (MB).")
    parser.add_argument("--workdir", type=Path, default=None, help="Where made exports go (default: a temp folder).")
    parser.add_argument("--tokenizer", default=None, help="Also time stats with token counts.")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per measurement; the fastest is kept.")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures as JSON too.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-stats-"))
    workdir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in args.export]
    paths += [make_export(mb, workdir / f"scaled-{mb:g}mb.jsonl") for mb in args.make_mb]
    if not paths:
        parser.error("give --export FILE or --make-mb N")
    rows = [bench(path, args.tokenizer, args.repeat) for path in paths]
    text = table(rows)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
