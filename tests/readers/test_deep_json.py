"""The recursion-free JSON parser agrees with msgspec wherever msgspec can go, and goes deeper."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oasst_data.readers.deep_json import DeepJSONError, loads, value_end

from ..conftest import REPO

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8"), max_size=6),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=25,
)


def msgspec_or_error(text: str):
    try:
        return ("ok", msgspec.json.decode(text.encode("utf-8")))
    except (msgspec.DecodeError, UnicodeEncodeError):
        return ("error", None)


def deep_or_error(text: str):
    try:
        return ("ok", loads(text))
    except DeepJSONError:
        return ("error", None)


@given(VALUES, st.sampled_from([None, 2]), st.sampled_from([True, False]))
def test_valid_documents_decode_as_msgspec_decodes_them(value, indent, ascii_only):
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert loads(text) == msgspec.json.decode(text.encode("utf-8"))


@given(VALUES, st.data())
def test_damaged_documents_fail_exactly_when_msgspec_fails(value, data):
    text = json.dumps(value)
    position = data.draw(st.integers(0, len(text)))
    edit = data.draw(st.sampled_from(["delete", "insert", "truncate"]))
    if edit == "delete":
        text = text[:position] + text[position + 1 :]
    elif edit == "insert":
        text = text[:position] + data.draw(st.sampled_from(list('{}[],:"\\ -0e.tnx'))) + text[position:]
    else:
        text = text[:position]
    assert deep_or_error(text) == msgspec_or_error(text)


@pytest.mark.parametrize(
    "text",
    ["", "[1,]", '{"a" 1}', '{"a": 1,}', "[1 2]", "01", "NaN", "[1] 2", '"\\x"', '"tab\tinside"', "{1: 2}", "[}", "tru"],
)
def test_what_json_does_not_allow_is_an_error_with_its_offset(text):
    assert msgspec_or_error(text)[0] == "error"
    with pytest.raises(DeepJSONError, match=r"\(character \d+\)"):
        loads(text)


def test_nesting_far_past_the_recursion_limit():
    depth = 200_000
    assert depth > 100 * sys.getrecursionlimit()
    with pytest.raises(RecursionError):
        msgspec.json.decode(b"[" * depth + b"]" * depth)
    document = loads('{"a": ' * depth + "1" + "}" * depth)
    for _ in range(depth):
        document = document["a"]
    assert document == 1


def test_an_unterminated_long_string_fails_in_linear_time():
    """A regex run inside a repetition once made this exponential (2^n steps for n characters)."""
    code = "from oasst_data.readers.deep_json import loads, DeepJSONError\ntry:\n    loads('[\"' + 'a' * 200_000)\nexcept DeepJSONError:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


def test_the_deep_tree_benchmark_runs_and_checks_its_threads(tmp_path):
    """benchmarks/bench_deep_tree.py at a small depth (its figures are in benchmarks/README.md)."""
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_deep_tree.py", "--depths", "700", "--repeat", "1", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| 700 |" in done.stderr and (tmp_path / "nested-700.jsonl").is_file()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_named(constant):
    """As the JSON Lines and array readers name them (found by a review: 'expected a value')."""
    with pytest.raises(DeepJSONError, match=rf"{constant} is not JSON; write null or a string \(character 6\)"):
        loads('{"a": ' + constant + "}")


CONTAINERS = st.one_of(st.lists(VALUES, max_size=4), st.dictionaries(st.text(max_size=4), VALUES, max_size=4))


@given(CONTAINERS, st.sampled_from([None, 2]), st.sampled_from([True, False]), st.sampled_from(["", ",\n{}", "]", '  "x"']))
def test_value_end_finds_where_an_array_or_object_ends(value, indent, ascii_only, after):
    """How the Alpaca array reader steps over an element too deep to decode, and reads on."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert value_end("  " + text + after, 2) == len(text) + 2


@given(CONTAINERS)
def test_value_end_wants_more_text_for_every_cut_of_a_value(value):
    text = json.dumps(value)
    for cut in range(1, len(text)):
        assert value_end(text[:cut], 0) is None


def test_value_end_goes_past_any_depth_and_brackets_inside_strings():
    text = "[" * 200_000 + json.dumps('a]}\\"[{') + "]" * 200_000  # a string holding brackets, a backslash and a quote
    assert value_end(text + ", 1", 0) == len(text)
    with pytest.raises(DeepJSONError, match=r"unexpected '\}' \(character 3\)"):
        value_end("[[1}]", 0)
