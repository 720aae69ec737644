"""benchmarks/make_scaled_export.py makes valid, deterministic exports with unique ids."""

from __future__ import annotations

import importlib.util
import json

import pytest

from oasst_data.config import ThreadConfig
from oasst_data.readers.files import open_binary
from oasst_data.threads import extract_threads

from .conftest import REPO


@pytest.fixture(scope="module")
def make_scaled_export():
    spec = importlib.util.spec_from_file_location("make_scaled_export", REPO / "benchmarks" / "make_scaled_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["scaled.jsonl", "scaled.jsonl.gz", "scaled.jsonl.zst"])
def test_scaled_export_is_valid_and_has_unique_ids(tmp_path, make_scaled_export, name):
    out = tmp_path / name
    assert make_scaled_export.main(["--out", str(out), "--trees", "60", "--seed", "4"]) == 0
    with open_binary(out) as handle:
        trees = [json.loads(line) for line in handle]
    assert len(trees) == 60
    ids, tree_ids = [], [t["message_tree_id"] for t in trees]
    for tree in trees:
        stack = [tree["prompt"]]
        while stack:
            node = stack.pop()
            ids.append(node["message_id"])
            stack.extend(node["replies"])
    assert len(set(ids)) == len(ids) and len(set(tree_ids)) == 60
    # Five copies of the twelve fixture trees keep their flags: twelve threads a copy.
    threads, funnel = extract_threads([out], config=ThreadConfig(val_split=0.0))
    assert len(threads) == 60 and funnel.bad_records == 0 and funnel.check() == []
    # Texts are longer than the fixture's and vary.
    assistant = [len(m.text) for t in threads for m in t.turns if m.role.value == "assistant"]
    assert sorted(assistant)[len(assistant) // 2] > 100 and len(set(assistant)) > 30


def test_same_seed_same_bytes_target_size_reached(tmp_path, make_scaled_export):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    make_scaled_export.main(["--out", str(a), "--target-mb", "0.3", "--seed", "1"])
    make_scaled_export.main(["--out", str(b), "--target-mb", "0.3", "--seed", "1"])
    make_scaled_export.main(["--out", str(c), "--target-mb", "0.3", "--seed", "2"])
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert 300_000 <= a.stat().st_size < 300_000 + 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "c.jsonl"]  # no partial files left
