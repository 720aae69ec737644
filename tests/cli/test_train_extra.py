"""`oasst-data train` without the train extra: one line naming it, not a torch traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from oasst_data_cli import train_command
from oasst_data_cli.app import app


def test_a_missing_train_extra_is_named_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(train_command, "TRAIN_EXTRA", ("torch", "a_module_that_is_not_installed"))
    result = CliRunner().invoke(app, ["train", "--shards", str(tmp_path), "--model", "m", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "a_module_that_is_not_installed is missing" in output and "pip install 'oasst-data[train]'" in output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_the_install_steps_follow_the_readme_order(monkeypatch):
    """torch first, then DeepSpeed built against it, then the extra: a bare extra would pull a CUDA
    torch, and DeepSpeed's build would fail in pip's isolated environment."""
    installed: set[str] = set()
    monkeypatch.setattr(train_command.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    steps = train_command.train_install_steps()
    assert steps.index("install torch first") < steps.index("DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed") < steps.index("pip install 'oasst-data[train]'")
    installed |= {"torch", "deepspeed"}
    assert train_command.train_install_steps() == "pip install 'oasst-data[train]' (README, Training)"
