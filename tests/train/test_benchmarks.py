"""The GPU benchmark's CPU-checkable parts: synthetic shards and the comparison verdict."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from oasst_data.shards import verify_shards
from oasst_data.tokenizer import load_tokenizer
from oasst_data.train.shards import open_build

from ..conftest import FIXTURE_TOKENIZER, REPO

BENCHMARKS = REPO / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_shards_follow_the_recorded_lengths_and_open_for_training(fixture_shards, tmp_path):
    synth = load("synth_shards")
    manifest = synth.synthesize(fixture_shards, tmp_path / "synth", rows=3000, val_rows=100, seed=0, max_length=2048)
    assert manifest["synthetic"] is True
    assert verify_shards(tmp_path / "synth").ok
    tokenizer = load_tokenizer(str(FIXTURE_TOKENIZER))
    build = open_build(tmp_path / "synth", tokenizer.fingerprint, vocab_size=len(tokenizer.tokenizer), max_length=2048)
    assert len(build.train) == 3000 and len(build.validation) == 100
    real = np.array(json.loads((BENCHMARKS / "data" / "en100_lengths.json").read_text())["lengths"])
    assert build.train.lengths.mean() == pytest.approx(real.mean(), rel=0.08)
    assert np.median(build.train.lengths) == pytest.approx(np.median(real), rel=0.15)
    assert all(build.train[i]["loss_mask"][1:].any() for i in range(0, 3000, 97))


def test_synthetic_shards_bucketed_for_a_token_budget(fixture_shards, tmp_path):
    synth = load("synth_shards")
    rows = synth.synthesize(fixture_shards, tmp_path / "rows", rows=3000, val_rows=100, seed=0, max_length=2048)
    tokens = synth.synthesize(fixture_shards, tmp_path / "tokens", rows=3000, val_rows=100, seed=0, max_length=2048, batch_tokens=16384)
    assert "token_budget" not in rows["padding"] and tokens["padding"]["token_budget"]["batch_tokens"] == 16384
    assert len(tokens["buckets"]) > len(rows["buckets"])
    assert verify_shards(tmp_path / "tokens").ok


def result(name, batching, policy, tokens_per_s):
    return {
        "name": name, "device": "cpu", "model": "tiny", "parameters": 1e6, "batching": batching, "policy": policy,
        "dtype": "fp32", "deepspeed": None, "gradient_accumulation_steps": 2, "measured_steps": 3, "rows_per_batch": 4.0,
        "padding_share": 0.1, "seconds_per_step": 1.0, "real_tokens_per_s": tokens_per_s, "mfu": None,
        "peak_memory_gib": None, "loss_start": 10.0, "loss_end": 9.0, "eval_loss": 9.1,
    }


@pytest.mark.parametrize(("budget_speed", "code"), [(1700.0, 0), (1500.0, 2)])
def test_compare_passes_only_at_the_target_ratio(tmp_path, capsys, budget_speed, code):
    smoke = pytest.importorskip("transformers") and load("gpu_smoke")
    paths = []
    for r in (result("random4", "random", "4 rows per batch", 1000.0), result("budget", "buckets", "up to 16,384 padded tokens per batch", budget_speed)):
        path = tmp_path / f"{r['name']}.json"
        path.write_text(json.dumps(r))
        paths.append(str(path))
    assert smoke.compare(paths, 1.6) == code
    assert ("PASS" if code == 0 else "FAIL") in capsys.readouterr().out
    assert smoke.compare(paths, 1.6, verdict=False) == 0  # the table alone
    table = capsys.readouterr().out
    assert "random4" in table and "budget" in table and "PASS" not in table and "FAIL" not in table


def test_gpu_smoke_script_dry_run_runs_every_step(tmp_path, request):
    """benchmarks/gpu_smoke.sh end to end on CPUs (SMOKE_DRY_RUN=1, tiny sizes): the GPU session
    gets one try of about 10 minutes, so the script itself must not rot. Through the deepspeed
    launcher and zero2 when DeepSpeed is installed (as in CI), else plain PyTorch."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    if importlib.util.find_spec("deepspeed") is not None:
        request.getfixturevalue("deepspeed_ops")  # compiled once, in the session's own folder
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "out"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its python3 = this one
        PYTHONPATH=str(REPO),
        SMOKE_DRY_RUN="1", SMOKE_ROWS="200", SMOKE_VAL_ROWS="16", SMOKE_STEPS="3", SMOKE_WARMUP="1",
        SMOKE_BATCH_TOKENS="2048", SMOKE_WORK=str(tmp_path / "work"), SMOKE_MASTER_PORT=str(port), OUT=str(out),
    )
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_smoke.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # DeepSpeed's CPU all-reduce files (66 MB a rank) are removed by the trainer, not left in /dev/shm.
    assert sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*")) == []
    for name in ("budget", "random4", "buckets4", "budget-no-deepspeed", "random4-no-deepspeed"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["measured_steps"] == 2 and result["real_tokens_per_s"] > 0 and 0 <= result["padding_share"] < 1
    assert json.loads((out / "budget-no-deepspeed.json").read_text())["deepspeed"] is None
    every_run = (out / "summary-all.txt").read_text()
    assert "budget-no-deepspeed" in every_run and "random4-no-deepspeed" in every_run and "PASS" not in every_run
    assert json.loads((out / "random4.json").read_text())["padding_share"] > json.loads((out / "buckets4.json").read_text())["padding_share"]
    assert "real tokens/s of random 4-row batching" in (out / "summary.txt").read_text()
    # Every log lies under $OUT, the folder a device call brings back even when it is cut off.
    assert {p.name for p in (out / "logs").iterdir()} >= {"budget.log", "random4.log", "cli.log", "fixture-build.json"}
    cli = tmp_path / "work" / "cli"
    assert (cli / "checkpoint-2").is_dir() and (cli / "checkpoint-4").is_dir() and (cli / "model.safetensors").is_file()


def test_gpu_smoke_script_starts_no_step_past_its_deadline(tmp_path):
    """The device call is cut at ~590 s while the steps' own limits add up to ~1,300 s: past
    SMOKE_END (560 s on the GPU) no run or CLI check starts, and what was skipped is said."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    out = tmp_path / "out"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(REPO), SMOKE_DRY_RUN="1", SMOKE_END="1", SMOKE_ROWS="200", SMOKE_VAL_ROWS="16",
        SMOKE_WORK=str(tmp_path / "work"), OUT=str(out),
    )
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_smoke.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 1, log  # nothing was measured: not a success
    for name in ("budget", "random4", "buckets4", "budget-no-deepspeed", "random4-no-deepspeed"):
        assert f"run {name} skipped:" in log and "(SMOKE_END=1)" in log, log
        assert not (out / f"{name}.json").exists()
    assert "skipping the CLI check:" in log and not (tmp_path / "work" / "cli").exists()


def test_a_smoke_run_repeated_on_the_same_work_folder_starts_afresh(tmp_path, fixture_shards):
    """A second try on the same GPU machine reuses --work: `train` refuses an output folder that
    holds an earlier run, so the benchmark clears its own scratch folder first."""
    import os
    import subprocess
    import sys

    pytest.importorskip("transformers")
    command = [
        sys.executable, str(BENCHMARKS / "gpu_smoke.py"), "run", "--shards", str(fixture_shards), "--tokenizer", str(FIXTURE_TOKENIZER),
        "--model", "tiny", "--steps", "2", "--warmup", "1", "--name", "again", "--work", str(tmp_path / "work"),
        "--result", str(tmp_path / "again.json"), "--dtype", "fp32", "--deepspeed", "none",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for attempt in range(2):
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (attempt, (done.stdout + done.stderr)[-3000:])
        assert json.loads((tmp_path / "again.json").read_text())["measured_steps"] == 1
