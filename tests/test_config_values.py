"""convert_value: a YAML value as its field's type, or a ConfigError naming where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from oasst_data.config_values import convert_value
from oasst_data.errors import ConfigError


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "inf", "NaN", "-Infinity"])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(ConfigError, match=r"^f\.yaml: rate must be a finite number"):
        convert_value("rate", value, float, "f.yaml")
    with pytest.raises(ConfigError, match="must be a finite number"):
        convert_value("rate", value, float | None, "f.yaml")


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "inf"])
def test_non_finite_values_are_not_ints(value):
    with pytest.raises(ConfigError, match=r"^f\.yaml: steps must be int"):
        convert_value("steps", value, int, "f.yaml")


def test_finite_floats_and_optional_none_pass():
    assert convert_value("rate", "6e-6", float, "f.yaml") == 6e-6
    assert convert_value("rate", 2, float, "f.yaml") == 2.0
    assert convert_value("rate", None, float | None, "f.yaml") is None


@pytest.mark.parametrize("value", [["a"], {"a": 1}])
def test_a_container_is_not_a_path(value):
    with pytest.raises(ConfigError, match=r"^f\.yaml: where must be Path"):
        convert_value("where", value, Path | None, "f.yaml")
