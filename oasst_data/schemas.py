"""JSON Schemas (draft 2020-12) of every input record kind, generated from the msgspec Structs.

    python -m oasst_data.schemas            # (re)write schemas/<kind>.schema.json
    python -m oasst_data.schemas --check    # exit 1 if a file is missing or stale

The Structs in `records.py` are the single source of truth; the generated schema is
post-processed in one way only: an integer field is declared in the Struct as "int, or a
float that is a multiple of 1" (JSON Schema's own meaning of "integer") and is written here
as plain `{"type": "integer"}`. Unknown extra properties are allowed, as the reader ignores them.
tests/test_schemas.py checks that the schemas and the typed decoding accept and reject the
same documents.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path

import msgspec

from .atomic import atomic_write_bytes
from .records import EXPORT_RECORD_TYPES

log = logging.getLogger(__name__)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://github.com/oasst-data/oasst-data/schemas/"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "schemas"

DESCRIPTIONS = {
    "message_tree": "One line of an Open-Assistant export: a message tree (message_tree_id, tree_state, prompt with nested replies).",
    "message": "One line of an Open-Assistant export: a single message (flat with parent_id, or a root with nested replies).",
    "thread": "One line of an Open-Assistant export: a pre-extracted thread (thread_id and the thread's messages, root first).",
    "oasst1_row": (
        "A flat message in the Hugging Face OpenAssistant/oasst1 layout: labels and emojis as parallel lists. "
        "The reader also requires the lists of one field to have equal lengths, which JSON Schema cannot express."
    ),
    "alpaca": "One Alpaca record: prompt = instruction, plus newline and input when input is non-empty; answer = output.",
}

# What msgspec writes for `records.Integer` beside the {"type": "integer"} it is annotated with.
_INTEGER_ALTERNATIVES = [{"type": "integer"}, {"type": "number", "multipleOf": 1}]


def _simplify(schema: dict) -> dict:
    """Collapse the Integer annotation to {"type": "integer"} (equivalent) and dedent docstring
    descriptions, so every msgspec version writes the same files; walks with a stack."""
    stack: list = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "integer" and node.get("anyOf") == _INTEGER_ALTERNATIVES:
                del node["anyOf"]
            if isinstance(node.get("description"), str):
                # A docstring as msgspec >= 0.23 writes it (dedented); 0.22 kept the indentation.
                node["description"] = inspect.cleandoc(node["description"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def schema_for(kind: str) -> dict:
    """The JSON Schema document of one record kind (a key of records.EXPORT_RECORD_TYPES)."""
    record_type = EXPORT_RECORD_TYPES[kind]
    generated = _simplify(msgspec.json.schema(record_type))
    document = {
        "$schema": DRAFT,
        "$id": f"{ID_BASE}{kind}.schema.json",
        "title": record_type.__name__,
        "description": DESCRIPTIONS[kind],
    }
    document.update(generated)
    return document


def render(kind: str) -> bytes:
    return (json.dumps(schema_for(kind), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def schema_path(kind: str, directory: Path = DEFAULT_DIR) -> Path:
    return Path(directory) / f"{kind}.schema.json"


def stale(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Schema files that are missing or differ from what the Structs generate."""
    out = []
    for kind in EXPORT_RECORD_TYPES:
        path = schema_path(kind, directory)
        if not path.is_file() or path.read_bytes() != render(kind):
            out.append(path)
    return out


def write_all(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema file whose content changed; returns the paths written."""
    written = []
    for path in stale(directory):
        kind = path.name.removesuffix(".schema.json")
        atomic_write_bytes(path, render(kind))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oasst_data.schemas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a schema file is missing or stale")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"schema folder (default: {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        outdated = stale(args.dir)
        for path in outdated:
            log.error("%s: missing or stale; run `python -m oasst_data.schemas`", path)
        if not outdated:
            log.info("%d schema files up to date in %s", len(EXPORT_RECORD_TYPES), args.dir)
        return 1 if outdated else 0
    written = write_all(args.dir)
    for path in written:
        log.info("wrote %s", path)
    if not written:
        log.info("%d schema files already up to date in %s", len(EXPORT_RECORD_TYPES), args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
