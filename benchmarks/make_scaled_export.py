"""Make a large Open-Assistant export (message trees, one a line) from the fixture trees.

    python benchmarks/make_scaled_export.py --out bench-data/scaled-150mb.jsonl --target-mb 150
    python benchmarks/make_scaled_export.py --out bench-data/trees.jsonl.gz --trees 20000 --seed 3

Each copy of a fixture tree (fixtures/oasst/trees.jsonl) keeps its shape and its flags (roles,
rank, deleted, synthetic, lang, review result, tree state: so the filters drop the same share),
gets new unique ids (`<id>~<copy>`), a user id, a date and emojis per message, and new texts
recombined from the fixture sentences. Text lengths follow the real export: prompter messages
median ~76 characters (10%-90%: ~25-240), assistant replies median ~560 (10%-90%: ~165-1890),
so threads span tens to ~2,000 tokens as Open-Assistant's do (benchmarks/data/en100_lengths.json).

Streaming, constant memory; deterministic for a given seed. `.gz` and `.zst` names are
compressed; --target-mb counts uncompressed bytes (1 MB = 10^6 bytes). The file appears only
when complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURE_TREES = REPO / "fixtures" / "oasst" / "trees.jsonl"
log = logging.getLogger("make_scaled_export")

# Lognormal text lengths in characters: (median, sigma), fitted to the real export's quantiles.
TEXT_CHARS = {"prompter": (76.0, 0.9), "assistant": (560.0, 0.95)}
MAX_CHARS = 9_000
EMOJIS = ["+1", "-1", "_skip_reply", "_skip_ranking", "red_flag", "heart", "laugh"]


def load_trees(path: Path = FIXTURE_TREES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sentence_pool(trees: list[dict]) -> list[str]:
    """Every distinct message text of the fixture trees (walked without recursion)."""
    pool: dict[str, None] = {}
    for tree in trees:
        stack = [tree["prompt"]]
        while stack:
            node = stack.pop()
            pool[node["text"]] = None
            stack.extend(node.get("replies") or ())
    return list(pool)


def make_text(rng: random.Random, pool: list[str], role: str) -> str:
    median, sigma = TEXT_CHARS[role]
    target = min(MAX_CHARS, max(2, int(rng.lognormvariate(math.log(median), sigma))))
    parts: list[str] = []
    size = 0
    while size < target:
        sentence = rng.choice(pool)
        parts.append(sentence)
        size += len(sentence) + 1
        if rng.random() < 0.08:  # paragraphs, as long replies have
            parts.append("\n\n")
    return " ".join(parts).replace(" \n\n ", "\n\n").strip()


def perturbed_copy(tree: dict, copy: int, rng: random.Random, pool: list[str]) -> dict:
    """The tree with new ids, texts and per-message metadata; same shape and flags."""
    suffix = f"~{copy}"
    out = {"message_tree_id": tree["message_tree_id"] + suffix, "tree_state": tree["tree_state"], "prompt": None}
    day = 1 + copy % 28
    stack: list[tuple[dict, dict | None]] = [(tree["prompt"], None)]
    while stack:
        source, parent = stack.pop()
        node = {key: value for key, value in source.items() if key != "replies"}
        node["message_id"] = source["message_id"] + suffix
        node["user_id"] = f"{rng.getrandbits(128):032x}"
        node["created_date"] = f"2023-02-{day:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00.000000+00:00"
        node["text"] = make_text(rng, pool, source["role"])
        node["review_count"] = rng.randint(3, 5)
        if rng.random() < 0.74:
            node["emojis"] = {name: rng.randint(1, 9) for name in rng.sample(EMOJIS, rng.randint(1, 3))}
        node["replies"] = []
        if parent is None:
            out["prompt"] = node
        else:
            node["parent_id"] = parent["message_id"]
            parent["replies"].append(node)
        for reply in reversed(source.get("replies") or ()):
            stack.append((reply, node))
    return out


def grow(tree: dict, rng: random.Random, pool: list[str], max_depth: int = 6) -> dict:
    """Branch a copied tree out to the real export's shape (without recursion).

    Real Open-Assistant trees have ~12 messages and ~5.5 threads each, sharing prefixes (thread
    text is ~1.45x the message text). The fixture trees are mostly chains and pairs, so without
    this a build would see almost no shared prefixes. Here the root gets three ranked assistant
    replies, and each assistant leaf above `max_depth` gets, with probability 0.5, a prompter
    follow-up answered by one to three ranked assistants. New messages copy their parent's lang.
    """
    counter = 0

    def new_message(parent: dict, role: str, rank: int | None) -> dict:
        nonlocal counter
        counter += 1
        node = {
            "message_id": f"{parent['message_id']}.g{counter}",
            "parent_id": parent["message_id"],
            "user_id": f"{rng.getrandbits(128):032x}",
            "text": make_text(rng, pool, role),
            "role": role,
            "lang": parent.get("lang"),
            "review_count": rng.randint(3, 5),
            "review_result": True,
            "deleted": False,
            "synthetic": False,
            "replies": [],
        }
        if rank is not None:
            node["rank"] = rank
        parent["replies"].append(node)
        return node

    root = tree["prompt"]
    while len(root["replies"]) < 3 and all(r["role"] == "assistant" for r in root["replies"]):
        new_message(root, "assistant", len(root["replies"]))
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if node["role"] == "assistant" and not node["replies"] and depth + 2 <= max_depth and rng.random() < 0.5:
            follow_up = new_message(node, "prompter", None)
            for rank in range(rng.choice((1, 2, 3, 3))):
                new_message(follow_up, "assistant", rank)
        stack.extend((reply, depth + 1) for reply in node["replies"])
    return tree


def scaled_trees(seed: int, trees: list[dict] | None = None, branch: bool = False) -> Iterator[dict]:
    """An endless stream of perturbed copies of the fixture trees (grown to real shapes if `branch`)."""
    trees = trees or load_trees()
    pool = sentence_pool(trees)
    rng = random.Random(seed)
    copy = 0
    while True:
        for tree in trees:
            copied = perturbed_copy(tree, copy, rng, pool)
            yield grow(copied, rng, pool) if branch else copied
        copy += 1


def open_output(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".gz":
        try:
            from isal import igzip as gzip
        except ImportError:  # pragma: no cover
            import gzip
        return gzip.open(path, "wb", compresslevel=6 if gzip.__name__ == "gzip" else 2)
    if suffix in (".zst", ".zstd"):
        import zstandard

        return zstandard.ZstdCompressor(level=3).stream_writer(path.open("wb"), closefd=True)
    return path.open("wb", buffering=1 << 20)


def write_export(out: Path, target_bytes: int | None = None, trees: int | None = None, seed: int = 0, branch: bool = False) -> tuple[int, int]:
    """Write trees until `trees` are written or `target_bytes` of JSON; returns (trees, uncompressed bytes)."""
    if (target_bytes is None) == (trees is None):
        raise ValueError("give exactly one of target_bytes and trees")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.partial{out.suffix}")
    count = size = 0
    try:
        with open_output(temp) as handle:
            for tree in scaled_trees(seed, branch=branch):
                line = (json.dumps(tree, ensure_ascii=False) + "\n").encode("utf-8")
                handle.write(line)
                count += 1
                size += len(line)
                if (trees is not None and count >= trees) or (target_bytes is not None and size >= target_bytes):
                    break
        temp.replace(out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return count, size


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output .jsonl (or .jsonl.gz / .jsonl.zst)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--target-mb", type=float, help="stop once this many MB (10^6 bytes) of uncompressed JSON are written")
    size.add_argument("--trees", type=int, help="number of trees to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--branch", action="store_true", help="grow each copy to the real export's branching (shared prefixes); see grow()")
    args = parser.parse_args(argv)
    target = None if args.target_mb is None else int(args.target_mb * 1e6)
    count, written = write_export(args.out, target, args.trees, args.seed, args.branch)
    log.info("wrote %d trees, %.1f MB of JSON, to %s", count, written / 1e6, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
