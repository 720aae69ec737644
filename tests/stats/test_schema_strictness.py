"""schemas/stats.schema.json describes exactly what the code writes: every real report passes,
and every single-leaf change to a wrong-typed, negative, null or unknown value fails.

Each leaf of a real export report (with and without a tokenizer) and of a real build's report
is set, one at a time, to "garbage", to null and to -5; the schema must refuse each change,
except those in ALLOWED, where the changed value is one the code may write there too.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator

import jsonschema
import pytest

from oasst_data.config import ThreadConfig
from oasst_data.filters import OTHER_DROP_REASONS, REGISTRY
from oasst_data.stats import export_stats, shard_stats, to_json

from .helpers import ALPACA, SCHEMA, TOKENIZER, TREES, build_with_cli

validator = jsonschema.Draft202012Validator(SCHEMA)

MUTATIONS = ("garbage", None, -5)

# (leaf paths, list indices as [*]; the mutations the schema rightly accepts there). Kept short:
# a leaf belongs here only when the changed value is one the code could have written.
ALLOWED: list[tuple[str, set]] = [
    # Names: of input files, a dataset's folder, split and data files, the tokenizer, the build folder.
    (r"inputs\[\*\]\.(name|split|files\[\*\]\.name)|tokenizer\.name", {"garbage"}),
    (r"shards\.build\.(path|build_config\.(inputs\[\*\]|alpaca\[\*\]|tokenizer))", {"garbage"}),
    # Options as the user gave them: language codes and tree states are any text, so is a system prompt.
    (r"config\.(lang|tree_states)", {"garbage"}),
    (r"config\.system_prompt", {"garbage", None}),
    # Settings that are null when not given.
    (r"config\.top_k|shards\.build\.build_config\.(bucket_batch_tokens|shard_rows)", {None}),
    (r"config\.seed", {-5}),  # any integer seeds the split
    (r"inputs\[\*\]\.bytes", {None}),  # a dataset's size, in reports written before 2026-11-29 (stats_format 1 too)
    # Values of the data: a language, tree state or model name is any text, or missing (null).
    (r"(export|shards)\.languages\[\*\]\.lang|export\.(tree_states\[\*\]\.tree_state|synthetic_models\[\*\]\.model_name)", {"garbage", None}),
    (r"export\.labels\[\*\]\.label", {"garbage"}),
    # Label figures are the export's own numbers, not checked by the reader (Open-Assistant's lie in [0, 1]).
    (r"export\.labels\[\*\]\.(votes|mean|min|p10|p50|p90|p99|max)", {-5}),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An Alpaca dataset folder (inputs of kind alpaca-dataset)."""
    folder = tmp_path_factory.mktemp("schema-dataset") / "ds"
    (folder / "data").mkdir(parents=True)
    shutil.copy(ALPACA.with_suffix(".jsonl"), folder / "data" / "train.jsonl")
    return folder


@pytest.fixture(scope="module")
def reports(tmp_path_factory, dataset) -> dict[str, dict]:
    """Real reports, as `stats --json` writes them, with as many kinds of leaf as the fixtures give."""
    config = ThreadConfig(top_k=2, max_label=["spam=0.9"], min_label=["quality=0.1"], system_prompt="Be brief.", on_bad_record="skip")
    build = build_with_cli(
        tmp_path_factory.mktemp("schema-build") / "shards",
        "--alpaca", str(dataset), "--alpaca", str(ALPACA), "--bucket-batch-tokens", "512", "--shard-rows", "5",
        "--system", "Be brief.", "--max-label", "spam=0.9",
    )
    made = {
        "export_tokens": export_stats([TREES], [str(ALPACA), str(dataset)], config=config, tokenizer=TOKENIZER),
        "export": export_stats([TREES]),
        "shards": shard_stats(build),
    }
    return {name: json.loads(to_json(report)) for name, report in made.items()}


def _leaves(value, path: tuple = ()) -> Iterator[tuple[tuple, object]]:
    """(path, value) of every scalar, empty list and empty object."""
    if isinstance(value, (dict, list)) and value:
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _leaves(item, path + (key,))
    else:
        yield path, value


def _pattern(path: tuple) -> str:
    return "".join("[*]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _allowed(pattern: str, mutation) -> str | None:
    for regex, mutations in ALLOWED:
        if re.fullmatch(regex, pattern) and mutation in mutations:
            return regex
    return None


def _mutations(report: dict) -> Iterator[tuple[str, object, bool]]:
    """(leaf pattern, mutation, accepted) for the first leaf of every pattern (list items alike)."""
    seen = set()
    for path, value in list(_leaves(report)):
        pattern = _pattern(path)
        if pattern in seen:
            continue
        seen.add(pattern)
        parent = report
        for part in path[:-1]:
            parent = parent[part]
        for mutation in MUTATIONS:
            if mutation == value and type(mutation) is type(value):
                continue
            parent[path[-1]] = mutation
            try:
                yield pattern, mutation, validator.is_valid(report)
            finally:
                parent[path[-1]] = value


def test_the_schema_accepts_real_reports_of_both_kinds(reports, tmp_path):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    bad_line = tmp_path / "bad.jsonl"
    lines = TREES.read_text(encoding="utf-8").splitlines()
    bad_line.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n", encoding="utf-8")
    # A label with negative figures (the reader takes them as they are): the report has them too.
    tree = {"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": {
        "message_id": "p1", "text": "hi", "role": "prompter", "lang": "en", "review_result": True, "replies": [
            {"message_id": "a1", "parent_id": "p1", "text": "hello", "role": "assistant", "lang": "en", "review_result": True,
             "rank": 0, "replies": [], "labels": {"quality": {"value": -0.5, "count": -3}}}]}}
    negative = tmp_path / "negative.jsonl"
    negative.write_text(json.dumps(tree) + "\n", encoding="utf-8")
    more = {
        "nothing_kept": export_stats([TREES], config=ThreadConfig(lang="xx"), tokenizer=TOKENIZER),
        "bad_record_skipped": export_stats([bad_line], config=ThreadConfig(on_bad_record="skip")),
        "negative_label": export_stats([negative]),
    }
    assert more["nothing_kept"]["export"]["threads"]["tokens"]["count"] == 0
    assert more["bad_record_skipped"]["export"]["funnel"]["quarantined"] == 1
    assert more["negative_label"]["export"]["labels"][0]["votes"] == -3
    for name, report in {**reports, **more}.items():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(json.loads(to_json(report)))]
        assert errors == [], name


def test_the_reports_hold_the_leaves_the_mutations_need(reports):
    kinds = {entry["kind"] for entry in reports["shards"]["inputs"]} | {entry["kind"] for entry in reports["export_tokens"]["inputs"]}
    assert kinds == {"oasst", "alpaca", "alpaca-dataset"}
    assert reports["export"]["tokenizer"] is None and reports["export_tokens"]["tokenizer"] is not None
    assert "token_budget_padding" in reports["shards"]["shards"]
    assert reports["export_tokens"]["export"]["labels"] and reports["export_tokens"]["export"]["synthetic_models"]


def test_every_single_leaf_mutation_is_rejected(reports):
    accepted, used = [], set()
    total = 0
    for name, report in reports.items():
        for pattern, mutation, valid in _mutations(report):
            total += 1
            if not valid:
                continue
            regex = _allowed(pattern, mutation)
            if regex is None:
                accepted.append(f"{name}: {pattern} = {mutation!r}")
            else:
                used.add(regex)
    assert total > 1000
    assert accepted == [], f"the schema accepts {len(accepted)} wrong values:\n" + "\n".join(accepted)
    # The allow-list holds nothing the schema rejects anyway.
    assert [regex for regex, _ in ALLOWED if regex not in used] == []


def test_drop_reasons_are_the_filters_reasons():
    """The schema lists every drop reason a funnel can count (`oasst-data filters`), and only those."""
    defs = SCHEMA["$defs"]
    tree = {r for spec in REGISTRY if spec.level == "tree" for r in spec.reasons}
    tree |= {o.reason for o in OTHER_DROP_REASONS if o.level in ("tree", "Alpaca record")}
    thread = {r for spec in REGISTRY if spec.level == "thread" for r in spec.reasons if not r.endswith(":NAME")}
    thread |= {o.reason for o in OTHER_DROP_REASONS if o.level == "thread"}
    assert set(defs["tree_drop_reason"]["enum"]) == tree
    assert set(defs["thread_drop_reason"]["anyOf"][0]["enum"]) == thread
    label = jsonschema.Draft202012Validator(defs["thread_drop_reason"])
    assert label.is_valid("max_label:spam") and label.is_valid("min_label:quality") and not label.is_valid("max_label:")


def test_stats_of_a_build_made_before_dataset_inputs_were_fingerprinted_are_valid(reports, tmp_path):
    """Found by a compatibility audit: a manifest of 2026-11-28 describes a dataset input as
    {name, kind} only; stats copies the manifest's inputs, and the schema required split and files."""
    import copy

    old = copy.deepcopy(reports["shards"])
    datasets = [entry for entry in old["inputs"] if entry["kind"] == "alpaca-dataset"]
    assert datasets
    for entry in datasets:
        for key in ("split", "files", "revision"):
            entry.pop(key, None)
    validator.validate(old)
