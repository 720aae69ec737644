"""Benchmark reading + thread extraction against a plain baseline, in one run, at sizes 10x apart.

    python benchmarks/bench_threads.py --sizes-mb 15 150 [--repeat 3] [--workdir bench-data]
        [--input other.jsonl ...] [--before OLD_CHECKOUT]

Both sides read the same scaled export (benchmarks/make_scaled_export.py) and produce every
training string `<|prompter|>Q<|endoftext|><|assistant|>A<|endoftext|>...` with the default
selection (ready_for_export, root review_result, root lang en, no deleted or synthetic message):

- package: `ThreadExtractor(...).run([path])`, each Thread serialized with `format_training`;
- baseline: stdlib `json.loads` per line and a plain recursive walk with Open-Assistant's rule.

Both hash their strings in order; the run stops if thread counts or digests differ. Every
measurement runs in a fresh interpreter; peak RSS is that child's own (os.wait4 ru_maxrss).
Times are the child's processing time (imports and interpreter start excluded; `wall` adds them).
With --repeat N the two sides alternate N times and the medians are reported (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench_threads")

PACKAGE = r'''
import hashlib, json, sys, time
from oasst_data.config import ThreadConfig
from oasst_data.serialize import format_training
from oasst_data.threads import ThreadExtractor
path = sys.argv[1]
start = time.perf_counter()
extractor = ThreadExtractor(ThreadConfig(lang="en"))
digest = hashlib.sha256()
threads = 0
for thread in extractor.run([path]):
    digest.update(format_training(thread.turns).encode("utf-8"))
    threads += 1
seconds = time.perf_counter() - start
import oasst_data
print(json.dumps({"threads": threads, "trees": extractor.funnel.trees_read, "seconds": seconds, "digest": digest.hexdigest(),
                  "package": oasst_data.__file__}))
'''

BASELINE = r'''
import hashlib, json, sys, time
path = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from reference_walk import keep_tree, visit
start = time.perf_counter()
digest = hashlib.sha256()
threads = trees = 0
with open(path, encoding="utf-8") as handle:
    for line in handle:
        tree = json.loads(line)
        trees += 1
        if not keep_tree(tree):
            continue
        texts = []
        visit(tree["prompt"], [], texts)
        for text in texts:
            digest.update(text.encode("utf-8"))
        threads += len(texts)
seconds = time.perf_counter() - start
print(json.dumps({"threads": threads, "trees": trees, "seconds": seconds, "digest": digest.hexdigest()}))
'''


def measure_with_rss(code: str, *args: str, pythonpath: Path | None = None) -> dict:
    """Run `code` in a fresh interpreter: its JSON line, wall time and its own peak RSS (os.wait4)."""
    env = dict(os.environ)
    if pythonpath is not None:
        # Another checkout's oasst_data, ahead of the working directory that `python -c` puts first
        # on sys.path (PYTHONPATH alone loses to it when the benchmark runs from the repository root).
        code = f"import sys; sys.path.insert(0, {str(Path(pythonpath).resolve())!r})\n" + code
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"child failed:\n{stderr[-3000:]}")
    payload = json.loads(stdout.strip().splitlines()[-1])
    payload["wall_seconds"] = wall
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    payload["peak_rss_mib"] = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return payload


def make_export(size_mb: int, workdir: Path) -> Path:
    path = workdir / f"scaled-{size_mb}mb.jsonl"
    if not path.exists():
        subprocess.run([sys.executable, str(HERE / "make_scaled_export.py"), "--out", str(path), "--target-mb", str(size_mb)], check=True)
    return path


def run_size(export: Path, repeat: int, before: Path | None = None) -> dict:
    megabytes = export.stat().st_size / 1e6
    sides = ["baseline", "package"] + (["before"] if before else [])
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(repeat):  # alternate, so drifts in machine load hit all sides alike
        runs["baseline"].append(measure_with_rss(BASELINE, str(export), str(HERE)))
        runs["package"].append(measure_with_rss(PACKAGE, str(export)))
        if before:
            runs["before"].append(measure_with_rss(PACKAGE, str(export), pythonpath=before))
    if before:
        imported = Path(runs["before"][0]["package"]).resolve()
        if not imported.is_relative_to(before.resolve()):
            raise SystemExit(f"--before imported {imported}, not the checkout {before}")
    for side in sides:
        digests = {(r["threads"], r["digest"]) for r in runs[side]}
        if len(digests) != 1:
            raise SystemExit(f"{side}: runs disagree: {digests}")
    pack = runs["package"][0]
    for side in sides:
        other = runs[side][0]
        if (other["threads"], other["digest"]) != (pack["threads"], pack["digest"]):
            raise SystemExit(f"package and {side} disagree: {pack['threads']} vs {other['threads']} threads")

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    row = {"input": export.name, "input_mb": round(megabytes, 1), "trees": pack["trees"], "threads": pack["threads"]}
    for side in sides:
        seconds = median(side, "seconds")
        row[f"{side}_s"] = round(seconds, 3)
        row[f"{side}_wall_s"] = round(median(side, "wall_seconds"), 3)
        row[f"{side}_trees_per_s"] = round(pack["trees"] / seconds)
        row[f"{side}_mb_per_s"] = round(megabytes / seconds, 1)
        row[f"{side}_peak_rss_mib"] = round(max(r["peak_rss_mib"] for r in runs[side]))
    # Per-run ratios (each pair ran back to back): their spread shows the noise.
    for side in sides[2:] + ["baseline"]:
        row[f"{side}_over_package"] = round(median(side, "seconds") / median("package", "seconds"), 2)
        row[f"{side}_over_package_per_run"] = [round(o["seconds"] / p["seconds"], 2) for o, p in zip(runs[side], runs["package"])]
    return row


def table(rows: list[dict]) -> str:
    sides = ["package", "baseline"] + (["before"] if "before_s" in rows[0] else [])
    head = ["input", "MB", "trees", "threads"]
    for side in sides:
        head += [f"{side} s", f"{side} MB/s", f"{side} trees/s", f"{side} peak MiB"]
    head += [f"{side} time / package time (per run)" for side in sides[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["input"], r["input_mb"], f"{r['trees']:,}", f"{r['threads']:,}"]
        for side in sides:
            cells += [r[f"{side}_s"], r[f"{side}_mb_per_s"], f"{r[f'{side}_trees_per_s']:,}", r[f"{side}_peak_rss_mib"]]
        for side in sides[1:]:
            cells.append(f"{r[f'{side}_over_package']} ({', '.join(map(str, r[f'{side}_over_package_per_run']))})")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[15, 150])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="where the scaled exports are kept (reused if present)")
    parser.add_argument("--input", type=Path, nargs="*", default=[], help="also measure these plain .jsonl exports")
    parser.add_argument("--before", type=Path, default=None, help="also measure the package of another checkout (its repo root)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="oasst-bench-threads-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for export in [make_export(size, workdir) for size in args.sizes_mb] + args.input:
        row = run_size(export, args.repeat, args.before)
        rows.append(row)
        log.info(json.dumps(row))
    log.info("\n%s", table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
