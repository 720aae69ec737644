"""JSON decoding without recursion, for the rare line nested deeper than msgspec goes.

msgspec (and the stdlib json module) recurse once per nesting level and give up after about a
thousand levels, which a message tree written as one nested line reaches at ~500 messages. This
parser keeps its open containers on a list instead, so depth costs memory, not stack. It is
strict RFC 8259 JSON like msgspec (no NaN, no trailing commas, no comments) and about 50x
slower, which is why it only runs when msgspec has given up on a line.
"""

from __future__ import annotations

import json
import math
import re
import sys
from decimal import Decimal
from typing import Any


class DeepJSONError(ValueError):
    """Malformed JSON, with the character offset where parsing stopped."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} (character {offset})")
        self.message = message
        self.offset = offset


_SPACE = re.compile(r"[ \t\n\r]*")
# A whole string token; its escapes are decoded by json.loads (a flat value: no recursion).
# One character or escape per repetition: a run quantifier inside (`[^"]+`) would backtrack
# exponentially on an unterminated string.
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")

# What the parser expects next.
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE, _END = range(7)


def loads(text: str) -> Any:
    """Decode one JSON document held in `text` to dicts, lists and scalars, at any depth."""
    open_containers: list[dict | list] = []
    pending_keys: list[str] = []  # the key whose value comes next, one per open object
    expect = _VALUE
    document: Any = None
    pos, end = 0, len(text)

    def attach(value: Any) -> None:
        nonlocal document
        if not open_containers:
            document = value
        elif type(open_containers[-1]) is list:
            open_containers[-1].append(value)
        else:
            open_containers[-1][pending_keys[-1]] = value

    while True:
        pos = _SPACE.match(text, pos).end()
        if pos >= end:
            if expect != _END:
                raise DeepJSONError("unexpected end of input", pos)
            return document
        char = text[pos]
        if expect == _END:
            raise DeepJSONError("extra data after the document", pos)
        if expect == _COLON:
            if char != ":":
                raise DeepJSONError("expected ':'", pos)
            pos, expect = pos + 1, _VALUE
            continue
        if expect == _COMMA_OR_CLOSE or (char in "]}" and expect in (_VALUE_OR_CLOSE, _KEY_OR_CLOSE)):
            container = open_containers[-1] if open_containers else None
            if char == ",":
                pos, expect = pos + 1, (_VALUE if type(container) is list else _KEY)
                continue
            if (char == "]" and type(container) is list) or (char == "}" and type(container) is dict):
                open_containers.pop()
                if type(container) is dict:
                    pending_keys.pop()
                pos, expect = pos + 1, (_COMMA_OR_CLOSE if open_containers else _END)
                continue
            raise DeepJSONError("expected ',' or the end of the " + ("array" if type(container) is list else "object"), pos)
        if expect in (_KEY, _KEY_OR_CLOSE):
            match = _STRING.match(text, pos) if char == '"' else None
            if match is None:
                raise DeepJSONError("expected a string key", pos)
            pending_keys[-1] = _string(match.group(), pos)
            pos, expect = match.end(), _COLON
            continue
        # expect is _VALUE or _VALUE_OR_CLOSE
        if char == "{" or char == "[":
            container: dict | list = {} if char == "{" else []
            attach(container)
            open_containers.append(container)
            if char == "{":
                pending_keys.append("")
            pos, expect = pos + 1, (_KEY_OR_CLOSE if char == "{" else _VALUE_OR_CLOSE)
            continue
        match = (_STRING if char == '"' else _SCALAR).match(text, pos)
        if match is None:
            for constant in ("NaN", "Infinity", "-Infinity"):  # what Python's json.dumps writes for them
                if text.startswith(constant, pos):
                    raise DeepJSONError(f"{constant} is not JSON; write null or a string", pos)
            raise DeepJSONError("expected a value", pos)
        token = match.group()
        if char == '"':
            value = _string(token, pos)
        else:
            try:
                value = json.loads(token)
            except ValueError:
                # An integer past Python's 4,300-digit limit: a Decimal, as msgspec reads one it passes
                # over; a field that must hold an int then refuses it as msgspec does ("out of range").
                value = Decimal(token)
        if type(value) is float and not math.isfinite(value):
            raise DeepJSONError("number out of range", pos)  # as msgspec says; json.loads gives inf
        attach(value)
        pos, expect = match.end(), (_COMMA_OR_CLOSE if open_containers else _END)


def _string(token: str, pos: int) -> str:
    value = json.loads(token)
    if "\\u" in token:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # an unpaired surrogate escape: msgspec refuses it, json.loads would not
            raise DeepJSONError("lone surrogate escape in a string", pos) from None
    return value


# What delimits a value's structure, and a whole string token, escapes taken as they come. Possessive
# (3.11+): the plain form kept a backtrack entry per character, 110 bytes each (a 30 MB string in
# a deep element took 3.5 GB, a review found); unrolled on 3.10, where only escapes cost that.
_STRUCTURE = re.compile(r'["\[\]{}]')
_ANY_STRING = re.compile(
    r'"(?:[^"\\]++|\\.)*+"' if sys.version_info >= (3, 11) else r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S
)
_CLOSES = {"[": "]", "{": "}"}


def value_end(text: str, pos: int) -> int | None:
    """Where the array or object opening at `text[pos]` ends, found by its brackets and strings
    alone, without recursion or building it; None when the text ends first (read more).

    For a JSON array reader to step over an element too deep to decode, and read on: only that
    element is then a bad record. Raises DeepJSONError for a bracket that closes the wrong kind.
    """
    open_brackets: list[str] = []
    while True:
        match = _STRUCTURE.search(text, pos)
        if match is None:
            return None
        char, pos = match.group(), match.start()
        if char == '"':
            string = _ANY_STRING.match(text, pos)
            if string is None:
                return None
            pos = string.end()
            continue
        pos += 1
        if char in _CLOSES:
            open_brackets.append(_CLOSES[char])
            continue
        if not open_brackets or open_brackets.pop() != char:
            raise DeepJSONError(f"unexpected {char!r}", pos - 1)
        if not open_brackets:
            return pos
