"""Settings: defaults < presets < flags; the seed's preset and ZeRO-2 config as shipped."""

from __future__ import annotations

import json

import pytest

from oasst_data.errors import ConfigError
from oasst_data.train.config import (
    TrainConfig,
    load_preset,
    preset_names,
    resolve_config,
)
from oasst_data.train.run import packaged_deepspeed_config

# The seed model card's `reference-pythia-12b` config and command line (shared/seed/).
SEED = {
    "dtype": "fp16",
    "learning_rate": 6e-6,
    "model": "EleutherAI/pythia-12b-deduped",
    "weight_decay": 0.0,
    "max_length": 2048,
    "warmup_steps": 100,
    "gradient_checkpointing": True,
    "gradient_accumulation_steps": 2,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 4,
    "eval_steps": 100,
    "save_steps": 1000,
    "num_train_epochs": 8.0,
    "save_total_limit": 4,
    "residual_dropout": 0.2,
    "deepspeed": "zero2",
}
SEED_ZERO = {
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16, "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto", "total_num_steps": "auto"},
    },
    "zero_optimization": {
        "stage": 2,
        "allgather_partitions": True,
        "allgather_bucket_size": 1e9,
        "overlap_comm": False,
        "reduce_scatter": True,
        "reduce_bucket_size": 1e9,
        "contiguous_gradients": True,
    },
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 2000,
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": False,
}


def test_reference_preset_has_the_seed_hyperparameters():
    assert "reference-pythia-12b" in preset_names()
    config = resolve_config(["reference-pythia-12b"])
    for key, value in SEED.items():
        assert getattr(config, key) == value, key
    assert isinstance(config.learning_rate, float)  # YAML 1.1 reads 6e-6 as a string


def test_zero2_config_is_the_seeds_verbatim():
    assert json.loads(packaged_deepspeed_config().read_text()) == SEED_ZERO


def test_flags_override_presets_which_override_defaults(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("learning_rate: 1e-4\nbatch_tokens: 8192\nreport_to: tensorboard,wandb\n")
    config = resolve_config(["reference-pythia-12b", str(own)], learning_rate=2e-5, max_steps=10)
    assert config.learning_rate == 2e-5  # flag > preset
    assert config.batch_tokens == 8192  # later preset
    assert config.report_to == ["tensorboard", "wandb"]
    assert config.weight_decay == 0.0 and config.gradient_accumulation_steps == 2  # first preset
    assert config.max_steps == 10
    assert resolve_config([]).learning_rate == TrainConfig().learning_rate  # defaults
    assert resolve_config(["reference-pythia-12b"], deepspeed="none").deepspeed is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rat: 1e-4\n", "unknown setting 'learning_rat' \\(did you mean 'learning_rate'\\?"),
        ("gradient_checkpointing: maybe\n", "must be bool"),
        ("per_device_train_batch_size: 2.5\n", "must be int"),
        ("- a list\n", "mapping"),
        ("dtype: fp8\n", "dtype must be one of"),
        ("report_to: mlflow\n", "report_to"),
        ("logging_steps: 0\n", "logging_steps must be a positive integer"),
        ("seed: -1\n", r"seed must be in \[0, 4294967295\]"),
        ("save_total_limit: 0\n", "save_total_limit must be a positive integer"),
        ("max_grad_norm: -1\n", "max_grad_norm must not be negative"),
        ("weight_decay: -0.1\n", "weight_decay must not be negative"),
        ("learning_rate: .nan\n", "learning_rate must be a finite number"),
        ("run_name: ../../elsewhere\n", "run_name must be a relative name inside OUT/runs"),
        ("run_name: /abs/x\n", "run_name must be a relative name inside OUT/runs"),
        ("run_name: exp/../../x\n", "run_name must be a relative name inside OUT/runs"),
    ],
)
def test_bad_presets_are_clear_config_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        resolve_config([str(path)])


def test_a_preset_may_use_the_flags_names(tmp_path):
    """Found by a docs audit: `num_epochs: 2` (from `--num-epochs`) was an unknown setting, and the
    error sent the user to `--help`, which shows only the flag names."""
    path = tmp_path / "flags.yaml"
    path.write_text("num_epochs: 2\nper-device-batch-size: 3\nnum_workers: 1\nmax-steps: 5\n")
    config = resolve_config([str(path)])
    assert (config.num_train_epochs, config.per_device_train_batch_size, config.dataloader_num_workers, config.max_steps) == (2, 3, 1, 5)


def test_a_run_name_may_group_runs_in_subfolders():
    """`exp/run1` worked before the '..' check and stays inside OUT/runs (found by a compatibility audit)."""
    assert resolve_config([], run_name="exp/run1").run_name == "exp/run1"


def test_a_setting_given_twice_in_one_preset_is_refused(tmp_path):
    """Found by a review: `num_epochs` and `num_train_epochs` together kept the later one silently."""
    path = tmp_path / "twice.yaml"
    path.write_text("num_epochs: 2\nnum_train_epochs: 3\n")
    with pytest.raises(ConfigError, match="'num_train_epochs' sets 'num_train_epochs' a second time"):
        resolve_config([str(path)])


def test_a_preset_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 13\)"):
        resolve_config([str(path)])


def test_unknown_preset_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="reference-pythia-12b"):
        load_preset("reference-pythia-99b")


def test_every_field_has_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(TrainConfig))


def test_zero2_loads_through_the_transformers_deepspeed_integration():
    pytest.importorskip("deepspeed")
    pytest.importorskip("torch")
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    config = resolve_config(["reference-pythia-12b"], output_dir="unused")
    args = TrainingArguments(
        output_dir="unused",
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        report_to="none",
    )
    hf = HfTrainerDeepSpeedConfig(str(packaged_deepspeed_config()))
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, model=None, num_training_steps=1000)
    ds = hf.config
    assert ds["zero_optimization"]["stage"] == 2 and hf.is_zero2()
    assert ds["optimizer"]["params"]["lr"] == 6e-6
    assert ds["scheduler"]["type"] == "WarmupDecayLR"
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 100
    assert ds["scheduler"]["params"]["total_num_steps"] == 1000
    assert ds["gradient_accumulation_steps"] == 2 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_clipping"] == 1.0


def test_a_token_budget_on_buckets_tuned_for_rows_gets_a_build_hint():
    from oasst_data.train.run import bucket_tuning_hint

    rows = {"buckets": None, "bucket_batch_size": 4, "bucket_batch_tokens": None}
    assert "4-row batches" in bucket_tuning_hint(rows, 16384) and "--bucket-batch-tokens 16384" in bucket_tuning_hint(rows, 16384)
    assert bucket_tuning_hint(rows, None) is None  # fixed rows: what the buckets were tuned for
    tuned = rows | {"bucket_batch_tokens": 16384}
    assert bucket_tuning_hint(tuned, 16384) is None
    assert "16,384-token batches" in bucket_tuning_hint(tuned, 4096)
    assert bucket_tuning_hint(rows | {"buckets": [128, 256]}, 16384) is None  # explicit buckets: the user chose


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (dict(logging_steps=0), "logging_steps must be a positive integer, got 0"),
        (dict(logging_steps=-5), "logging_steps must be a positive integer, got -5"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number, got nan"),
        (dict(learning_rate=float("inf")), "learning_rate must be a finite number, got inf"),
        (dict(learning_rate=-1e-5), "learning_rate must be positive"),
        (dict(seed=-1), r"seed must be in \[0, 4294967295\] \(2\*\*32-1\), got -1"),
        (dict(seed=2**32), "seed must be in"),
        (dict(seed=99999999999999999999999), "seed must be in"),
        (dict(weight_decay=-1.0), "weight_decay must not be negative, got -1.0"),
        (dict(weight_decay=float("nan")), "weight_decay must be a finite number"),
        (dict(save_total_limit=0), "save_total_limit must be a positive integer, got 0"),
        (dict(save_total_limit=-2), "save_total_limit must be a positive integer, got -2"),
        (dict(warmup_steps=-1), "warmup_steps must not be negative, got -1"),
        (dict(max_grad_norm=-0.5), "max_grad_norm must not be negative, got -0.5"),
        (dict(max_grad_norm=float("inf")), "max_grad_norm must be a finite number"),
        (dict(num_train_epochs=float("nan")), "num_train_epochs must be a finite number"),
        (dict(seed=1.5), "seed must be an integer"),
    ],
)
def test_out_of_range_values_are_config_errors(flags, message):
    """Values transformers or torch would otherwise fail on with a traceback, mid-setup or mid-run."""
    with pytest.raises(ConfigError, match=message):
        resolve_config([], **flags)


def test_the_edges_of_the_ranges_are_accepted():
    config = resolve_config([], seed=0, save_total_limit=None, max_grad_norm=0.0, weight_decay=0.0, warmup_steps=0, logging_steps=1)
    assert config.max_grad_norm == 0.0 and config.save_total_limit is None  # no clipping; keep every checkpoint
    assert resolve_config([], seed=2**32 - 1, save_total_limit=1).seed == 2**32 - 1


@pytest.mark.parametrize(
    "flag",
    [
        ["--learning-rate", "nan"],
        ["--learning-rate", "inf"],
        ["--logging-steps", "0"],
        ["--seed", "99999999999999999999999"],
        ["--seed", "-1"],
        ["--save-total-limit", "0"],
        ["--max-grad-norm", "-1"],
        ["--weight-decay", "-1"],
    ],
)
def test_cli_refuses_bad_values_in_one_line_before_writing_anything(tmp_path, flag):
    typer = pytest.importorskip("typer")
    from oasst_data_cli.train_command import train as train_command
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)  # two commands: `train` stays a subcommand
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["train", "--shards", str(tmp_path / "shards"), "--output-dir", str(out), *flag])
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1, done.output
    assert done.output.startswith("error:") and flag[0][2:].replace("-", "_") in done.output  # names the setting
    assert not out.exists()  # nothing written (no oasst_train.json)


def test_an_old_jit_build_lock_is_named_and_a_fresh_one_is_not(tmp_path, caplog, monkeypatch):
    """torch's extension build waits forever on a lock left by a killed build; the trainer names it."""
    import os
    import time

    from oasst_data.train.run import warn_about_stale_build_locks

    old = tmp_path / "cpu_adam" / "lock"
    fresh = tmp_path / "shm_comm" / "lock"
    for lock in (old, fresh):
        lock.parent.mkdir()
        lock.touch()
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))  # a build takes about a minute; this one's builder is gone
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with caplog.at_level("WARNING", logger="oasst_data.train"):
        assert warn_about_stale_build_locks() == [old]
    assert str(old) in caplog.text and "cpu_adam" in caplog.text and "60 minutes" in caplog.text
    assert str(fresh) not in caplog.text
    nested = tmp_path / "default-root"
    (nested / "py311_cpu" / "fused_adam").mkdir(parents=True)
    (nested / "py311_cpu" / "fused_adam" / "lock").touch()
    os.utime(nested / "py311_cpu" / "fused_adam" / "lock", (an_hour_ago, an_hour_ago))
    assert warn_about_stale_build_locks(nested) == [nested / "py311_cpu" / "fused_adam" / "lock"]


@pytest.mark.parametrize(("max_steps", "expected"), [(0, -1), (-1, -1), (-7, -1), (5, 5)])
def test_max_steps_zero_or_less_trains_by_epochs(tmp_path, max_steps, expected):
    """transformers takes max_steps=0 literally (one step at learning rate 0); "> 0 overrides epochs" is the rule."""
    pytest.importorskip("torch")
    from oasst_data.train.trainer import training_arguments

    config = resolve_config([], output_dir=str(tmp_path), max_steps=max_steps, num_train_epochs=2.0)
    arguments = training_arguments(config, "fp32", has_eval=False, deepspeed=None)
    assert arguments.max_steps == expected and arguments.num_train_epochs == 2.0


@pytest.mark.parametrize(
    ("batches", "world", "accumulation", "warned"),
    [(5, 3, 2, False), (5, 3, 3, True), (8, 1, 8, False), (3, 4, 2, True), (0, 1, 4, False)],
)
def test_an_epoch_shorter_than_one_accumulated_step_is_named(caplog, batches, world, accumulation, warned):
    from oasst_data.train.run import warn_about_short_epochs

    with caplog.at_level("WARNING", logger="oasst_data"):
        assert warn_about_short_epochs(batches, world, accumulation) is warned
    assert ("fewer than --gradient-accumulation-steps" in caplog.text) is warned


def test_one_process_driving_several_gpus_is_refused():
    """The Trainer would fall back to nn.DataParallel and split every batch (and budget) across the GPUs."""
    from oasst_data.train.run import check_one_device_per_process

    check_one_device_per_process(0)  # CPU
    check_one_device_per_process(1)
    with pytest.raises(ConfigError, match="sees 8 GPUs: launch one process per GPU .*--num_gpus 8"):
        check_one_device_per_process(8)


def test_a_huge_epoch_count_is_refused():
    with pytest.raises(ConfigError, match="num_train_epochs must be at most 1,000,000"):
        resolve_config([], num_train_epochs=1e308)


def test_a_bad_value_in_a_preset_file_names_the_file(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("seed: -4\nlearning_rate: 1e-5\n")
    with pytest.raises(ConfigError, match=f"^{preset}: seed must be in"):
        resolve_config(["reference-pythia-12b", str(preset)])
    assert resolve_config([str(preset)], seed=3).seed == 3  # a flag that overrides it: no error
    with pytest.raises(ConfigError, match=r"^seed must be in"):  # the flag's own error names no file
        resolve_config([str(preset)], seed=-1)
