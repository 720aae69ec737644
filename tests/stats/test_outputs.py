"""Renderings of a report: JSON against its schema, 80-column terminal tables, HTML, Markdown."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import jsonschema
import pytest
from rich.console import Console

from oasst_data.config import ThreadConfig
from oasst_data.stats import export_stats, render_html, render_markdown, render_tables, shard_stats, to_json

from .helpers import ALPACA, SCHEMA, TOKENIZER, TREES, build_with_cli

validator = jsonschema.Draft202012Validator(SCHEMA)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    build = build_with_cli(tmp_path_factory.mktemp("stats-outputs") / "shards")
    return {
        "export": export_stats([TREES], config=ThreadConfig(top_k=2)),
        "export_tokens": export_stats([TREES], [str(ALPACA)], tokenizer=TOKENIZER),
        "shards": shard_stats(build),
    }


def test_schema_is_valid_and_accepts_every_report(reports):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for name, report in reports.items():
        errors = [e.message for e in validator.iter_errors(json.loads(to_json(report)))]
        assert errors == [], name


def test_schema_rejects_missing_renamed_or_mistyped_keys(reports):
    report = json.loads(to_json(reports["export"]))
    missing = copy.deepcopy(report)
    del missing["export"]["totals"]["messages"]
    renamed = copy.deepcopy(report)
    renamed["export"]["flags"]["synthetics"] = renamed["export"]["flags"].pop("synthetic")
    mistyped = copy.deepcopy(report)
    mistyped["export"]["depth"]["max"] = "8"
    wrong_kind = copy.deepcopy(report)
    wrong_kind["kind"] = "shards"
    shards = json.loads(to_json(reports["shards"]))
    bad_share = copy.deepcopy(shards)
    bad_share["shards"]["padding"][0]["random"] = 1.5
    for broken in (missing, renamed, mistyped, wrong_kind, bad_share):
        assert not validator.is_valid(broken)


def test_json_keeps_its_key_order(reports):
    text = to_json(reports["export"])
    assert list(json.loads(text)) == ["stats_format", "kind", "package_version", "inputs", "config", "tokenizer", "export", "shards"]
    assert to_json(reports["export"]) == text  # deterministic


def _render(report: dict, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    for table in render_tables(report):
        console.print(table)
    return console.export_text()


@pytest.mark.parametrize("name", ["export", "export_tokens", "shards"])
def test_terminal_tables_fit_80_columns_unsqueezed(reports, name):
    narrow = _render(reports[name], 80)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    # Nothing was wrapped or shortened to fit: a wide terminal shows exactly the same lines.
    assert narrow == _render(reports[name], 200)


def test_terminal_shows_the_figures(reports):
    text = _render(reports["export"], 80)
    for expected in ("46", "22", "Drop funnel", "top_k", "quality", "test-model", "ready_for_export"):
        assert expected in text
    shards = _render(reports["shards"], 80)
    for expected in ("Splits", "b=4", "bucketed", "random", "totals match manifest", "tree states / val split", "lang=en (root)"):
        assert expected in shards


class _Collector(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("name", ["export_tokens", "shards"])
def test_html_is_one_self_contained_page(reports, name):
    page = render_html(reports[name])
    parser = _Collector()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    # Nothing to fetch: no scripts, stylesheets, images or any URL at all.
    assert not {"script", "link", "img", "iframe", "object"} & set(parser.tags)
    assert not [a for a in parser.attrs if a[0] in ("src", "href")]
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "<style>" in page
    # Every chart is well-formed SVG.
    charts = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(charts) >= 4
    for chart in charts:
        ET.fromstring(chart)


def test_html_export_page_has_the_charts_and_figures(reports):
    page = render_html(reports["export_tokens"])
    for section in ("overview", "tree_states", "languages", "depth", "branching", "ranks", "labels", "threads", "funnel"):
        assert f'id="{section}"' in page
    for title in ("Messages per language", "Messages per depth", "Drop funnel", "Thread length (tokens): train"):
        assert title in page
    # Hand-counted figures of trees.jsonl + alpaca.json: 17 trees, 56 messages, 16 threads.
    assert "17 trees, 56 messages, 16 threads" in page
    assert "<td class=n>56</td>" in page


def test_html_shard_page_has_histograms_per_split(reports):
    page = render_html(reports["shards"])
    for title in ("Token-length histogram: train", "Token-length histogram: validation", "Expected padding waste", "Rows per language", "Drop funnel (as built)"):
        assert title in page
    assert "12 rows" in page
    # One bar per histogram bin (32 bins) per split.
    histogram = re.search(r"<svg[^>]*aria-label=\"Token-length histogram: train\".*?</svg>", page, flags=re.S).group(0)
    assert histogram.count("<rect") == 32


def test_markdown_tables_are_well_formed(reports):
    for report in reports.values():
        text = render_markdown(report)
        tables = [block for block in text.split("\n\n") if block.startswith("| ")]
        assert len(tables) >= 5
        for table in tables:
            widths = {line.count(" | ") for line in table.splitlines()}
            assert len(widths) == 1, table  # every row has the header's columns
    text = render_markdown(reports["export"])
    assert "| messages | 46 |" in text
    assert "### Drop funnel (these filters)" in text
    assert "- dropped: top_k" in text
    # Only the JSON used to hold these two distributions (top_k=2 leaves 10 threads of 7 trees).
    assert "### Turns per thread\n\n| turns | threads |\n| :--- | ---: |\n| 2 | 7 |\n| 4 | 2 |\n| 8 | 1 |\n" in text
    assert "### Threads per tree\n\n| threads | trees |\n| :--- | ---: |\n| 1 | 4 |\n| 2 | 3 |\n\n*7 trees gave threads, 1.4 each on average*" in text


def test_markdown_rows_stay_whole_when_a_value_holds_a_line_break(tmp_path):
    """A model name with a line break ended its table row: the rest ('## boom') became a heading."""
    assistant = {"message_id": "a1", "parent_id": "p1", "text": "yo", "role": "assistant", "lang": "en", "review_result": True,
                 "rank": 0, "synthetic": True, "model_name": "m|x\n## boom", "replies": [], "labels": {"sp\r\nam": {"value": 0.5, "count": 1}}}
    prompt = {"message_id": "p1", "text": "hi", "role": "prompter", "lang": "en", "review_result": True, "replies": [assistant]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": prompt}) + "\n")
    text = render_markdown(export_stats([path], config=ThreadConfig(synthetic="include")))
    assert "| m\\|x ## boom | 1 |" in text
    assert "\n## boom" not in text
    for table in (block for block in text.split("\n\n") if block.startswith("| ")):
        assert all(line.startswith("| ") and line.endswith(" |") for line in table.splitlines()), table


def test_markdown_escapes_html_from_the_data(tmp_path):
    """Markdown renders raw HTML: a model name must not become a <script> on a dataset card page."""
    assistant = {"message_id": "a1", "parent_id": "p1", "text": "yo", "role": "assistant", "lang": "en", "review_result": True,
                 "rank": 0, "synthetic": True, "model_name": "<script>alert(1)</script>&co", "replies": []}
    prompt = {"message_id": "p1", "text": "hi", "role": "prompter", "lang": "en", "review_result": True, "replies": [assistant]}
    path = tmp_path / "<b>t.jsonl"
    path.write_text(json.dumps({"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": prompt}) + "\n")
    text = render_markdown(export_stats([path], config=ThreadConfig(synthetic="include")))
    assert "<script>" not in text and "<b>" not in text
    assert "| &lt;script&gt;alert(1)&lt;/script&gt;&amp;co | 1 |" in text
    assert "&nbsp;&nbsp;" in text  # the indented sub-rows keep their (intended) entity


def test_markdown_keeps_links_images_and_html_from_the_data_inert():
    """Found by an audit: a build folder named `<img src=x onerror=...>` went raw into the `### Build`
    heading, and `[x](javascript:...)` or `![](https://tracker)` in a value became a link or an image."""
    from oasst_data.stats.markdown import section_markdown
    from oasst_data.stats.sections import Section

    section = Section("build", "Build <img src=x onerror=alert(1)>", ["name", "n"], caption="from [a](javascript:alert(1))")
    section.add("![](https://tracker.example/p.png)", "1")
    section.add("[md](javascript:alert(1)) `code` *em*", "2")
    text = section_markdown(section)
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "\\!\\[\\](https://tracker.example/p.png)" not in text  # ! needs no escape once [ ] are
    assert "!\\[\\](https://tracker.example/p.png)" in text
    assert "\\[md\\](javascript:alert(1)) \\`code\\` \\*em\\*" in text
    assert "*from \\[a\\](javascript:alert(1))*" in text
    assert re.search(r"(?<!\\)\[", text) is None  # every [ escaped: no link can open


def test_terminal_tables_fold_long_values_instead_of_cutting_them():
    """Found by an audit: three long model names ending differently were cut to the same "…" prefix."""
    from oasst_data.stats.sections import Section
    from oasst_data.stats.terminal import WIDTH, section_table

    names = [f"{'a-very-long-synthetic-model-name-from-an-export-' * 2}{ending}" for ending in ("alpha", "beta", "gamma")]
    section = Section("synthetic_models", "Synthetic models", ["model"])  # one column: its folded lines join up
    for name in names:
        section.add(name)
    console = Console(width=WIDTH, record=True)
    console.print(section_table(section))
    flat = re.sub(r"[\s│┃┏┓┗┛━─┡┩└┘┌┐]", "", console.export_text())
    assert "…" not in flat
    assert all(name in flat for name in names)


def test_the_export_thread_length_histogram_is_in_every_output(reports):
    """Found by an audit: it was in the JSON and the HTML charts only; and its last bin, which also
    counts threads over --max-length, was labelled as if it held only lengths up to it."""
    from oasst_data.stats.sections import report_sections

    report = reports["export_tokens"]
    (histogram,) = [s for s in report_sections(report) if s.key == "thread_length_histogram"]
    threads = report["export"]["threads"]
    assert sum(int(cell.replace(",", "")) for row in histogram.rows for cell in row[1:]) == sum(threads["by_split"].values())
    last = threads["length_histogram"]["bins"][-1]
    assert all("+" not in row[0] for row in histogram.rows[:-1])
    if any(last["rows"].values()):
        assert histogram.rows[-1][0] == f"{last['min_length']}+"
    assert "Thread length histogram (tokens)" in _render(report, 80)
    assert "### Thread length histogram (tokens)" in render_markdown(report)
    assert f"{last['min_length']}+" in render_html(report)


def test_language_codes_that_would_look_alike_are_quoted():
    """Found by an audit: 'en', ' en' and 'en ' were three identical `en` rows, '' and null both `(none)`."""
    from oasst_data.stats.format import lang_name

    assert [lang_name(code) for code in ("en", " en", "en ", "", None)] == ["en", "' en'", "'en '", "''", "(none)"]
