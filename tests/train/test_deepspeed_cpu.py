"""The DeepSpeed ZeRO-2 path, on CPUs: `oasst-data train` under the `deepspeed` launcher.

Two ranks on DeepSpeed's CPU accelerator (gloo) run the seed preset and its shipped ZeRO-2
config, as the README launches them on GPUs (`deepspeed --num_gpus N --no_local_rank --module
oasst_data_cli train ...`), in fp32. What a GPU adds (fp16, NCCL, speed) is the GPU smoke
benchmark's (benchmarks/gpu_smoke.sh). The first run JIT-compiles DeepSpeed's CPU Adam with the
C++ compiler once per test session (the `deepspeed_ops` fixture), in a folder of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (.ci/run installs it)")
if shutil.which("c++") is None and shutil.which("g++") is None:
    pytest.skip("DeepSpeed compiles its CPU Adam with a C++ compiler; none found", allow_module_level=True)
torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from ..conftest import FIXTURE_TOKENIZER, REPO  # noqa: E402
from .conftest import MEASURED  # noqa: E402

STEPS = 6
RANKS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shm_buffers_left(command: list[str]) -> list[str]:
    """DeepSpeed's CPU all-reduce files in /dev/shm that a launch on `command`'s master port left."""
    if "--master_port" not in command:
        return []
    port = command[command.index("--master_port") + 1]
    return sorted(path.name for path in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"))


def oasst_train(launcher: list[str], shards: Path, model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        COLUMNS="200",  # one rich log line per event
    )
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [
        *launcher,
        "train",
        "--shards", str(shards),
        "--tokenizer", str(FIXTURE_TOKENIZER),
        "--model", str(model),
        "--random-init",
        "--preset", "reference-pythia-12b",  # ZeRO-2 (the shipped zero2.json), accumulation 2, dropout 0.2
        "--dtype", "fp32",
        "--output-dir", str(out),
        "--max-steps", str(STEPS),
        "--per-device-batch-size", "1",
        "--learning-rate", "3e-3",
        "--warmup-steps", "1",
        "--logging-steps", "1",
        "--eval-steps", "0",
        "--seed", "3",
        *extra,
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    (out.parent / f"{out.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command[:8])} ... exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    # 66 MB of memory a rank, never freed: a day of test runs filled /dev/shm and ran out of memory.
    assert shm_buffers_left(command) == []
    return done


def deepspeed_launcher() -> list[str]:
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(RANKS), "--master_port", str(free_port()),
            "--no_local_rank", "--module", "oasst_data_cli"]


@pytest.fixture(scope="module")
def two_rank_runs(deepspeed_ops, fixture_shards, tiny_model, tmp_path_factory) -> dict[str, Path]:
    """6 steps uninterrupted (saving at 3), and the same run resumed from its step-3 checkpoint."""
    base = tmp_path_factory.mktemp("zero2-cpu")
    whole, resumed = base / "whole", base / "resumed"
    oasst_train(deepspeed_launcher(), fixture_shards, tiny_model, whole, "--save-steps", "3")
    oasst_train(deepspeed_launcher(), fixture_shards, tiny_model, resumed, "--resume", str(whole / "checkpoint-3"))
    return {"whole": whole, "resumed": resumed}


def log_history(run: Path) -> list[dict]:
    return json.loads((run / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["log_history"]


def test_zero2_on_two_ranks_trains_with_the_seed_config_and_partitions_the_optimizer(two_rank_runs, fixture_shards):
    whole = two_rank_runs["whole"]
    checkpoint = whole / "checkpoint-3"
    optimizer_parts = sorted(p.name for p in (checkpoint / "global_step3").glob("*optim_states.pt"))
    # ZeRO stage 2: each rank keeps its own part of the optimizer state.
    assert optimizer_parts == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(RANKS)]
    assert sorted(p.name for p in checkpoint.glob("rng_state_*.pth")) == [f"rng_state_{r}.pth" for r in range(RANKS)]
    args = torch.load(checkpoint / "training_args.bin", weights_only=False)
    assert Path(args.deepspeed).name == "zero2.json" and args.world_size == RANKS
    ds = args.hf_deepspeed_config.config
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 1 * 2 * RANKS  # rows per device x accumulation x ranks
    history = log_history(whole)
    rows = json.loads((fixture_shards / "manifest.json").read_text())["totals"]["train"]["rows"]
    # Every optimizer step consumes 4 rows across the 2 ranks, so the epoch count says both ranks trained.
    assert history[-1]["epoch"] == pytest.approx(STEPS * 1 * 2 * RANKS / rows)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == STEPS and losses[-1] < losses[0]
    assert (whole / "model.safetensors").is_file() and (whole / "oasst_train.json").is_file()
    MEASURED.append(f"ZeRO-2 on 2 CPU ranks (tiny GPT-NeoX, seed preset, fp32): loss {losses[0]:.3f} -> {losses[-1]:.3f} in {STEPS} steps")


def test_resuming_zero2_mid_epoch_on_two_ranks_gives_the_uninterrupted_run(two_rank_runs):
    whole, resumed = two_rank_runs["whole"], two_rank_runs["resumed"]
    said = " ".join((resumed.parent / "resumed.log").read_text().split())  # rich may wrap the line
    assert re.search(r"resuming \S*checkpoint-3 at step 3", said), said[-2000:]  # not only the launcher echoing --resume
    assert re.search(r"mean train loss over steps 4-6 \(resumed at 3\)", said), said[-2000:]  # this session's mean, said so
    assert log_history(whole)[2]["epoch"] % 1 != 0  # step 3 ends in the middle of an epoch
    want = [e["loss"] for e in log_history(whole) if "loss" in e][3:]
    got = [e["loss"] for e in log_history(resumed) if "loss" in e][-3:]
    assert got == pytest.approx(want, rel=1e-5)
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_one_process_without_a_launcher_runs_zero2(deepspeed_ops, fixture_shards, tiny_model, tmp_path):
    """`oasst-data train --preset reference-pythia-12b` alone: a one-rank DeepSpeed world is made up."""
    done = oasst_train([sys.executable, "-m", "oasst_data_cli"], fixture_shards, tiny_model, tmp_path / "one")
    output = done.stdout + done.stderr
    assert "DeepSpeed zero2.json" in output
    assert "Gradient accumulation steps mismatch" not in output  # accelerate's note, filtered (see run.py)
    assert (tmp_path / "one" / "model.safetensors").is_file()


def test_zero2_steps_with_the_mean_over_every_trained_token_of_the_step(deepspeed_ops, fixture_shards, tiny_model, tmp_path):
    """Accumulated micro-batches of different sizes on two ranks: one gradient, per trained token.

    The probe (zero2_gradient_probe.py) trains one ZeRO-2 step with SGD at rate 1, so the weight
    change is the gradient DeepSpeed applied, and compares it with the gradient of the mean loss
    over every trained token of the step computed on a plain copy of the initial model.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    probe = Path(__file__).with_name("zero2_gradient_probe.py")
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(RANKS), "--master_port", str(free_port()),
               "--no_local_rank", str(probe), str(fixture_shards), str(tiny_model), str(FIXTURE_TOKENIZER), str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"the gradient probe exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    assert shm_buffers_left(command) == []
    result = json.loads((tmp_path / "probe.json").read_text())
    assert result["micro_batches_per_rank"] == [2] * RANKS  # the seed preset accumulates 2 batches per rank
    assert len(set(result["trained_tokens_per_batch"])) > 1, result  # unequal batches: the normalisation matters
    # A mean per micro-batch would be this far off, so the comparison can tell the two apart.
    assert result["per_batch_mean_relative_error"] > 0.02, result
    assert result["relative_error"] < 1e-4, result
    # Evaluation on the two ranks: each its own share, one uncounted repeat, one loss per token.
    assert result["eval_batches"] % RANKS == 1, result
    assert result["eval_trained_tokens"] == result["reference_eval_tokens"]
    assert result["eval_loss"] == pytest.approx(result["reference_eval_loss"], rel=1e-5)
    MEASURED.append(
        f"ZeRO-2, 2 CPU ranks x 2 accumulated batches of {result['trained_tokens_per_batch']} trained tokens: "
        f"applied gradient vs per-token mean, relative error {result['relative_error']:.1e} "
        f"(a per-batch mean: {result['per_batch_mean_relative_error']:.1e}); eval loss on {result['eval_batches']} batches "
        f"over 2 ranks {result['eval_loss']:.5f} vs per-row reference {result['reference_eval_loss']:.5f}"
    )


def test_the_mean_train_loss_counts_every_rank_also_for_unlogged_steps(two_rank_runs, fixture_shards, tiny_model, tmp_path):
    """transformers adds the steps after the last log to the mean train loss from rank 0 alone;
    the same run logged every step (two_rank_runs' "whole") gives the true mean of its 6 losses."""
    done = oasst_train(deepspeed_launcher(), fixture_shards, tiny_model, tmp_path / "sparse", "--logging-steps", "4")
    reported = float(re.search(r"trained: ([0-9.]+) mean train loss", " ".join((done.stdout + done.stderr).split())).group(1))
    per_step = [entry["loss"] for entry in log_history(two_rank_runs["whole"]) if "loss" in entry]
    assert len(per_step) == STEPS
    # Steps 1 and 4 are logged (first step, every 4th); 5 and 6 are the unlogged remainder.
    assert reported == pytest.approx(sum(per_step) / STEPS, rel=1e-3)
