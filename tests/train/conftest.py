"""Shards for the trainer's tests, made by the real `oasst-data build` (never a hand-written writer)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import FIXTURE_TOKENIZER, FIXTURES, REAL_TOKENIZER, REAL_TREES, REPO

# Numbers the tests measure (padding shares, losses); printed once at the end of the run.
MEASURED: list[str] = []


def build_with_cli(out: Path, *args: str) -> Path:
    """`oasst-data build ... --out OUT` in a subprocess, exactly as a user runs it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "oasst_data_cli", "build", *args, "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"oasst-data build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def fixture_shards(tmp_path_factory) -> Path:
    """The project fixtures (Open-Assistant trees and Alpaca records) built with the fixture tokenizer."""
    return build_with_cli(
        tmp_path_factory.mktemp("fixture-build") / "shards",
        str(FIXTURES / "oasst" / "trees.jsonl"),
        "--alpaca", str(FIXTURES / "alpaca" / "alpaca.json"),
        "--tokenizer", str(FIXTURE_TOKENIZER),
        "--lang", "en",
        "--val-split", "0.2",
    )


@pytest.fixture(scope="session")
def real_shards(tmp_path_factory) -> Path:
    """../shared's 100 real English trees built with the real Pythia tokenizer (skipped without ../shared)."""
    if not REAL_TREES.exists() or not (REAL_TOKENIZER / "tokenizer.json").exists():
        pytest.skip("../shared real data or tokenizer not present")
    return build_with_cli(
        tmp_path_factory.mktemp("real-build") / "shards",
        str(REAL_TREES),
        "--tokenizer", str(REAL_TOKENIZER),
        "--lang", "en",
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A GPT-NeoX config (no weights): 2 layers, hidden 64, a vocab smaller than the tokenizer's."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-neox")
    transformers.GPTNeoXConfig(
        vocab_size=512,  # the fixture tokenizer has 598 tokens with the markers: embeddings must grow
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        bos_token_id=0,
        eos_token_id=0,
    ).save_pretrained(folder)
    return folder


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("trainer measurements")
        for line in MEASURED:
            terminalreporter.write_line(line)


# DeepSpeed compiles these on first use; on CPUs the zero2 runs need both.
DEEPSPEED_CPU_OPS = ("CPUAdamBuilder", "ShareMemCommBuilder")


@pytest.fixture(scope="session")
def deepspeed_ops(tmp_path_factory):
    """DeepSpeed's JIT-compiled CPU ops, built once in one process before any launch, in a folder
    of this test session's own (or $TORCH_EXTENSIONS_DIR when set).

    The default ~/.cache/torch_extensions is shared by every run on the machine, and a build killed
    midway leaves a `lock` there that makes every later build wait forever, silently: that cost one
    CI run 45 minutes of timeouts. Building here first also keeps ranks from compiling at once."""
    pytest.importorskip("deepspeed")
    preset = os.environ.get("TORCH_EXTENSIONS_DIR")
    folder = Path(preset) if preset else tmp_path_factory.mktemp("torch-extensions")
    locks = sorted(str(lock) for lock in folder.rglob("lock"))
    if locks:
        pytest.fail(f"stale JIT build lock(s) in TORCH_EXTENSIONS_DIR={folder}: {locks}; a build was killed midway. "
                    "Delete them when no build is running.")
    code = (
        "from deepspeed.accelerator import get_accelerator\n"
        f"for name in {DEEPSPEED_CPU_OPS!r}:\n"
        "    get_accelerator().create_op_builder(name).load()\n"
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(folder))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"building DeepSpeed's CPU ops failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_EXTENSIONS_DIR", str(folder))  # every launch's environment copies os.environ
        yield folder
