"""A value read from a YAML config, converted to its dataclass field's type, or a clear error.

YAML gives strings, numbers, booleans, lists and None, and YAML 1.1 (PyYAML) even reads 6e-6 as
a string. Both config files (the build's and the trainer's presets) pass every value through
`convert_value` with the field's type hint, so a wrong value names the file and the setting
instead of failing later inside the code that uses it.
"""

from __future__ import annotations

import enum
import math
import typing
from pathlib import Path
from typing import Any

from .errors import ConfigError


def convert_value(name: str, value: Any, hint: Any, where: str) -> Any:
    """`value` as the type `hint` (Optional, list[...], bool, int, float, str, Path or an Enum)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: {name} must not be empty")
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if typing.get_origin(base) is list:
        item_type = (typing.get_args(base) or (str,))[0]
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
        return [_scalar(name, item.strip() if isinstance(item, str) else item, item_type, where) for item in items]
    return _scalar(name, value, base, where)


def _scalar(name: str, value: Any, kind: Any, where: str) -> Any:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(str(member.value) for member in kind)
            raise ConfigError(f"{where}: {name} must be one of {choices}, got {value!r}") from None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # .inf, .nan, or the strings "inf"/"nan"
                raise ConfigError(f"{where}: {name} must be a finite number, got {value!r}")
            return number
        if isinstance(value, (dict, list, tuple, bool)):
            raise ValueError
        if kind is Path:
            return Path(str(value))
        return str(value)
    except (TypeError, ValueError):
        hint = ""
        if kind in (str, Path) and any(isinstance(item, bool) for item in (value if isinstance(value, (list, tuple)) else [value])):
            # PyYAML (YAML 1.1) reads unquoted no/yes/on/off as booleans: `lang: no` (Norwegian)
            # became "False" and dropped every tree without a word.
            hint = f' (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the text, e.g. {name}: "no")'
        raise ConfigError(f"{where}: {name} must be {getattr(kind, '__name__', kind)}, got {value!r}{hint}") from None
