"""Record the token-length distribution of real Open-Assistant threads (no text, only lengths).

    python benchmarks/record_lengths.py            # needs ../shared (data and tokenizer)

Builds ../shared/data/oasst/en_100_tree.jsonl.gz with the real Pythia tokenizer through
`oasst-data build` and writes every row's length (train and validation) to
benchmarks/data/en100_lengths.json. Tests and the GPU benchmark draw synthetic rows from it,
so "the real length distribution" is available where ../shared is not (the GPU machine, CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TREES = SHARED / "data" / "oasst" / "en_100_tree.jsonl.gz"
TOKENIZER = SHARED / "tokenizers" / "gpt-neox-20b"
OUT = REPO / "benchmarks" / "data" / "en100_lengths.json"


def main() -> None:
    if not TREES.exists():
        sys.exit(f"{TREES} not found: this needs ../shared beside the checkout")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shards"
        command = [sys.executable, "-m", "oasst_data_cli", "build", str(TREES), "--tokenizer", str(TOKENIZER), "--lang", "en", "--out", str(out)]
        subprocess.run(command, check=True, cwd=REPO, capture_output=True)
        manifest = json.loads((out / "manifest.json").read_text())
        lengths = []
        for shard in manifest["shards"]:
            lengths += pq.read_table(out / shard["path"], columns=["length"]).column("length").to_pylist()
    record = {
        "what": "token lengths of the training rows (threads) of en_100_tree.jsonl.gz, default build, all splits",
        "tokenizer": "gpt-neox-20b (Pythia) with the Open-Assistant markers",
        "fingerprint": manifest["tokenizer"]["fingerprint"],
        "rows": len(lengths),
        "lengths": sorted(lengths),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record) + "\n")
    print(f"{len(lengths)} lengths, mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)} -> {OUT}")


if __name__ == "__main__":
    main()
