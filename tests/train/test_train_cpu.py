"""End to end on a CPU: a tiny random GPT-NeoX trains on the fixture shards, evaluates, resumes."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from oasst_data.errors import ConfigError  # noqa: E402
from oasst_data.train.collator import IGNORE_INDEX, PadCollator  # noqa: E402
from oasst_data.train.config import resolve_config  # noqa: E402
from oasst_data.train.run import REPORT_PACKAGES, train  # noqa: E402

from ..conftest import FIXTURE_TOKENIZER  # noqa: E402
from .conftest import MEASURED  # noqa: E402


def config(shards, model, out, **overrides):
    values = dict(
        shards=str(shards),
        model=str(model),
        random_init=True,
        tokenizer=str(FIXTURE_TOKENIZER),
        output_dir=str(out),
        dtype="fp32",
        learning_rate=3e-3,
        warmup_steps=2,
        logging_steps=1,
        eval_steps=20,
        save_steps=0,
        seed=1,
    )
    values.update(overrides)
    return resolve_config([], **values)


def losses(outcome) -> list[float]:
    return [entry["loss"] for entry in outcome.trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize(
    "batching",
    [dict(per_device_train_batch_size=2), dict(batch_tokens=128, pad_to_multiple_of=8)],
    ids=["fixed-rows", "token-budget"],
)
def test_tiny_gpt_neox_trains_and_its_loss_falls(fixture_shards, tiny_model, tmp_path, batching):
    outcome = train(config(fixture_shards, tiny_model, tmp_path / "run", max_steps=40, **batching))
    history = losses(outcome)
    assert len(history) == 40
    start, end = float(np.mean(history[:3])), float(np.mean(history[-3:]))
    assert end < 0.6 * start, history
    assert "eval_loss" in outcome.eval_metrics and np.isfinite(outcome.eval_metrics["eval_loss"])
    model = outcome.trainer.model
    assert model.get_input_embeddings().num_embeddings == 600  # 598 tokens, rounded up to a multiple of 8
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "tokenizer.json").is_file()
    record = json.loads((tmp_path / "run" / "oasst_train.json").read_text())
    assert record["shards"]["tokenizer_fingerprint"] and record["plan"]["batches_per_epoch"] >= 1
    counts = outcome.trainer.token_counts.totals()
    # samples/s from the rows really trained, not steps x per_device_train_batch_size
    metrics = outcome.train_metrics
    assert metrics["train_samples_per_second"] * metrics["train_runtime"] == pytest.approx(counts["rows"], rel=1e-2)
    MEASURED.append(
        f"tiny GPT-NeoX, {batching}: loss {start:.3f} -> {end:.3f} in 40 steps; eval loss "
        f"{outcome.eval_metrics['eval_loss']:.3f}; padding {1 - counts['real'] / counts['padded']:.1%}"
    )


def test_resuming_a_checkpoint_mid_epoch_gives_the_uninterrupted_run(fixture_shards, tiny_model, tmp_path):
    common = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=6, eval_steps=0, learning_rate=1e-3)
    whole = train(config(fixture_shards, tiny_model, tmp_path / "whole", save_steps=3, **common))
    checkpoint = tmp_path / "whole" / "checkpoint-3"
    assert checkpoint.is_dir() and (checkpoint / "oasst_batch_plan.json").is_file()
    # 8 train rows in batches of 2, 2 per step: step 3 ends in the middle of the second epoch.
    assert whole.trainer.state.log_history[2]["epoch"] % 1 != 0
    resumed = train(config(fixture_shards, tiny_model, tmp_path / "resumed", resume=str(checkpoint), **common))
    assert resumed.trainer.state.global_step == 6
    assert losses(resumed)[-3:] == pytest.approx(losses(whole)[-3:], rel=1e-5)
    for (name, a), (_, b) in zip(whole.trainer.model.named_parameters(), resumed.trainer.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resuming_on_another_batch_plan_is_refused_naming_what_differs(fixture_shards, tiny_model, tmp_path, caplog):
    """The Trainer resumes by skipping the batches of the steps done: on another plan it would skip
    other batches than those trained, silently. The checkpoint records its plan; resume compares."""
    from oasst_data.train.trainer import BATCH_PLAN_FILE, check_resume_plan

    common = dict(per_device_train_batch_size=2, max_steps=3, eval_steps=0)
    train(config(fixture_shards, tiny_model, tmp_path / "first", save_steps=3, **common))
    checkpoint = tmp_path / "first" / "checkpoint-3"
    plan = json.loads((checkpoint / BATCH_PLAN_FILE).read_text())
    assert plan | {"train_rows_sha256": None} == {
        "seed": 1, "policy": "2 rows per batch", "batching": "buckets", "world_size": 1, "gradient_accumulation_steps": 1,
        "num_batches": plan["num_batches"], "train_rows": 8, "train_rows_sha256": None,
    }
    changed = [
        (dict(per_device_train_batch_size=3), r"policy '2 rows per batch', now '3 rows per batch'; num_batches"),
        (dict(batch_tokens=64, pad_to_multiple_of=8), r"policy '2 rows per batch', now 'up to 64 padded tokens per batch, padded to a multiple of 8'"),
        (dict(seed=2), r"seed 1, now 2"),
        (dict(batching="random"), r"batching 'buckets', now 'random'"),
        (dict(gradient_accumulation_steps=2), r"gradient_accumulation_steps 1, now 2"),
    ]
    for index, change in enumerate(changed):
        flags, message = change
        out = tmp_path / f"resumed-{index}"
        with pytest.raises(ConfigError, match=message):
            train(config(fixture_shards, tiny_model, out, resume=str(checkpoint), **(common | flags)))
        assert not out.exists()  # refused before the Trainer made the output directory
    with pytest.raises(ConfigError, match=r"train_rows 8, now 9; train_rows_sha256"):
        check_resume_plan(checkpoint, plan | {"train_rows": 9, "train_rows_sha256": "0" * 16})
    check_resume_plan(checkpoint, plan)  # the same plan: no error
    # Found by an audit: a checkpoint without its plan (a kill between the trainer state and the
    # plan) resumed with a warning, and then on any settings. The plan is written last: incomplete.
    from oasst_data.train.checkpoints import checkpoint_problem

    (checkpoint / "rng_state.pth").rename(checkpoint / "rng.moved")
    assert checkpoint_problem(checkpoint) == "not a complete checkpoint (no rng_state.pth: that rank's save was interrupted?)"
    (checkpoint / "rng.moved").rename(checkpoint / "rng_state.pth")
    (checkpoint / BATCH_PLAN_FILE).unlink()
    assert checkpoint_problem(checkpoint).startswith(f"not a complete checkpoint (no {BATCH_PLAN_FILE}, written once every rank saved")
    with pytest.raises(ConfigError, match=re.escape(f"--resume {checkpoint}: not a complete checkpoint (no {BATCH_PLAN_FILE}")):
        train(config(fixture_shards, tiny_model, tmp_path / "resumed-x", resume=str(checkpoint), **common))


@pytest.mark.parametrize(
    ("context", "overrides", "message"),
    [
        # The fixture build's longest train row has 32 tokens, its longest validation row 59.
        (24, {}, r"the longest train row has 32 tokens, more than the context of .* \(max_position_embeddings 24\); rebuild with `oasst-data build --max-length 24`"),
        (40, {}, r"the longest validation row has 59 tokens, .*--max-length 40`"),
        (64, dict(max_length=100), r"max_length 100 is beyond the context of .* pass --max-length 64 or less"),
        (60, dict(pad_to_multiple_of=8), r"--pad-to-multiple-of 8 pads the longest validation row \(59 tokens\) to 64, .*--max-length 56`"),
    ],
    ids=["train-row", "validation-row", "max-length", "padded"],
)
def test_rows_beyond_the_models_context_are_refused_before_training(fixture_shards, tmp_path, context, overrides, message):
    """A model with learned positions fails on longer rows mid-run ("IndexError: index out of range
    in self"); a rotary GPT-NeoX runs on, past the context it declares. Both are refused up front."""
    model = tmp_path / "short-neox"
    transformers.GPTNeoXConfig(
        vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=context, rotary_pct=0.25, bos_token_id=0, eos_token_id=0,
    ).save_pretrained(model)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(config(fixture_shards, model, out, max_steps=1, **overrides))
    assert not out.exists()


def test_a_gpt2_with_a_short_context_is_refused_in_one_line(fixture_shards, tmp_path):
    """GPT-2's learned positions (n_positions) are where the IndexError came from."""
    model = tmp_path / "short-gpt2"
    transformers.GPT2Config(vocab_size=512, n_positions=16, n_embd=32, n_layer=1, n_head=2).save_pretrained(model)
    with pytest.raises(ConfigError, match=r"train row has 32 tokens, more than the context of .*\(n_positions 16\).*--max-length 16`") as raised:
        train(config(fixture_shards, model, tmp_path / "run", max_steps=1))
    assert "\n" not in str(raised.value)


def test_a_launch_the_trainer_sees_as_one_process_is_refused(fixture_shards, tiny_model, tmp_path, monkeypatch):
    """torchrun on CPUs without DeepSpeed: every process would be rank 0 of 1 and write the same output."""
    for key in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):  # no process group is started here
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=2: .* sees a world of one .*DeepSpeed"):
        train(config(fixture_shards, tiny_model, out, max_steps=1, eval_steps=0))
    assert not out.exists()


def test_the_first_tokens_per_second_reading_starts_when_training_does(fixture_shards, tiny_model, tmp_path):
    """Time between the Trainer's construction and training (DeepSpeed's initialisation and JIT
    builds on a GPU; a pause here) is not training time."""

    class FirstStep(transformers.TrainerCallback):
        real = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                FirstStep.real = trainer.token_counts.totals()["real"]

    def pause(made):
        nonlocal trainer
        trainer = made
        time.sleep(3.0)

    trainer = None
    outcome = train(config(fixture_shards, tiny_model, tmp_path / "run", max_steps=1, eval_steps=0), callbacks=[FirstStep()], on_trainer=pause)
    first = next(e for e in outcome.trainer.state.log_history if "tokens_per_second" in e)
    seconds = FirstStep.real / first["tokens_per_second"]  # the time the first reading counted
    assert 0 < seconds < 2.0, seconds


def test_without_a_tokenizer_the_one_saved_with_the_shards_is_used(fixture_shards, tiny_model, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="oasst_data"):
        outcome = train(config(fixture_shards, tiny_model, tmp_path / "saved", tokenizer=None, max_steps=1, eval_steps=0))
    assert outcome.trainer.state.global_step == 1
    assert (tmp_path / "saved" / "tokenizer.json").is_file()
    record = json.loads((tmp_path / "saved" / "oasst_train.json").read_text())
    assert record["config"]["tokenizer"] is None


def test_loss_is_normalised_per_trained_token_across_accumulated_batches(fixture_shards, tiny_model, tmp_path):
    """Two micro-batches of different sizes give the gradient of one batch holding all their rows."""
    outcome = train(config(fixture_shards, tiny_model, tmp_path / "norm", max_steps=1, eval_steps=0, gradient_accumulation_steps=2))
    trainer = outcome.trainer
    assert trainer.model_accepts_loss_kwargs
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    collate = PadCollator(pad_token_id=1)
    small, large = collate(rows[:2]), collate(rows[2:])
    assert int((small["labels"] != IGNORE_INDEX).sum()) != int((large["labels"] != IGNORE_INDEX).sum())
    model = trainer.model
    model.zero_grad()
    batches, num_items = trainer.get_batch_samples(iter([small, large]), 2, trainer.args.device)
    for batch in batches:
        trainer.training_step(model, batch, num_items)
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(**collate(rows)).loss.backward()  # one batch: mean over all its trained tokens
    for got, want in zip(accumulated, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)


def test_eval_loss_is_per_trained_token_whatever_the_eval_batches(fixture_shards, tiny_model, tmp_path):
    """The Trainer's own loop would average per-batch means (a one-row batch weighing as much as a
    full one); ours is the split's loss per trained token, the same for every batching."""
    from oasst_data.train.sampler import FixedRows, TokenBudget

    outcome = train(config(fixture_shards, tiny_model, tmp_path / "eval", max_steps=2, eval_steps=0))
    trainer, model = outcome.trainer, outcome.trainer.model.eval()
    rows = trainer.eval_dataset
    assert len(rows) >= 3
    collate = PadCollator(pad_token_id=1)
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for index in range(len(rows)):  # one row at a time: no padding, no batching involved
            batch = collate([rows[index]])
            logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
            labels = batch["labels"][0, 1:]
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum"))
            tokens += int((labels != IGNORE_INDEX).sum())
    want = loss_sum / tokens
    per_batch_means = []
    for policy in (FixedRows(1), FixedRows(2), FixedRows(len(rows)), TokenBudget(160, 8)):
        trainer.eval_policy = policy
        metrics = trainer.evaluate()
        assert metrics["eval_loss"] == pytest.approx(want, rel=1e-5), policy
        assert metrics["eval_trained_tokens"] == tokens and metrics["eval_samples_per_second"] > 0
        loader = trainer.get_eval_dataloader()
        with torch.no_grad():
            means = [float(model(**b).loss) for b in loader]
        per_batch_means.append(float(np.mean(means)))
    # What averaging per-batch means would have reported instead: it depends on the batching.
    assert max(abs(m - want) for m in per_batch_means) > 1e-3, (per_batch_means, want)


def test_cli_trains_and_fails_in_one_line(fixture_shards, tiny_model, tmp_path, caplog, monkeypatch):
    typer = pytest.importorskip("typer")
    from oasst_data_cli.train_command import train as train_command
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)  # two commands: `train` stays a subcommand
    base = ["train", "--shards", str(fixture_shards), "--model", str(tiny_model), "--random-init", "--dtype", "fp32"]
    runner = CliRunner()
    # Rich markup in the folder's name: the closing summary raised MarkupError after a good run (an audit).
    out = tmp_path / "cli[/]x"
    with caplog.at_level(logging.INFO):
        done = runner.invoke(app, [*base, "--tokenizer", str(FIXTURE_TOKENIZER), "--output-dir", str(out), "--max-steps", "2", "--batch-tokens", "256", "--report-to", "tensorboard"])
    assert done.exit_code == 0, done.output
    assert str(out) in done.stderr
    assert (out / "model.safetensors").is_file()
    assert list(out.rglob("events.out.tfevents.*"))  # --report-to tensorboard
    assert any("padding" in r.getMessage() for r in caplog.records)

    wrong = runner.invoke(app, [*base, "--tokenizer", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x")])
    assert wrong.exit_code == 1 and "Traceback" not in wrong.output
    preset = [*base, "--tokenizer", str(FIXTURE_TOKENIZER), "--output-dir", str(tmp_path / "y"), "--preset", "reference-pythia-12b"]
    # DeepSpeed on a CPU trains in fp32 only (tests/train/test_deepspeed_cpu.py runs it, in subprocesses).
    bf16 = runner.invoke(app, [*preset, "--dtype", "bf16"])
    assert bf16.exit_code == 1 and "DeepSpeed" in bf16.output and "--dtype fp32" in bf16.output
    assert "Traceback" not in bf16.output and len(bf16.output.strip().splitlines()) <= 2
    monkeypatch.setitem(REPORT_PACKAGES, "wandb", ("a_package_that_is_not_installed",))
    no_wandb = runner.invoke(app, [*base, "--tokenizer", str(FIXTURE_TOKENIZER), "--output-dir", str(tmp_path / "w"), "--report-to", "wandb"])
    assert no_wandb.exit_code == 1 and "--report-to wandb needs" in no_wandb.output and "Traceback" not in no_wandb.output
    monkeypatch.setattr("oasst_data.train.run.deepspeed_installed", lambda: False)
    missing = runner.invoke(app, preset)
    assert missing.exit_code == 1 and "DeepSpeed is not installed" in missing.output and "--deepspeed none" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) <= 2
    fp16 = runner.invoke(app, [*base, "--tokenizer", str(FIXTURE_TOKENIZER), "--output-dir", str(tmp_path / "z"), "--dtype", "fp16"])
    assert fp16.exit_code == 1 and "fp16" in fp16.output and "Traceback" not in fp16.output


def test_bf16_trains_on_a_cpu(fixture_shards, tiny_model, tmp_path):
    # transformers refused bf16 without a GPU ("Your setup doesn't support bf16/gpu") unless told use_cpu.
    outcome = train(config(fixture_shards, tiny_model, tmp_path / "bf16", dtype="bf16", max_steps=2, eval_steps=0))
    assert outcome.trainer.args.bf16 and outcome.trainer.state.global_step == 2


def test_unusable_outputs_checkpoints_and_deepspeed_configs_are_refused_before_training(fixture_shards, tiny_model, tmp_path, caplog):
    """Each used to end in a traceback from transformers or DeepSpeed, or to overwrite an input."""
    import shutil

    whole = tmp_path / "run"
    train(config(fixture_shards, tiny_model, whole, max_steps=2, save_steps=1, eval_steps=0))
    good = whole / "checkpoint-2"
    assert (good / "trainer_state.json").is_file()
    not_a_checkpoint = tmp_path / "plain"
    not_a_checkpoint.mkdir()
    damaged_state = tmp_path / "damaged" / "checkpoint-2"
    shutil.copytree(good, damaged_state)
    (damaged_state / "trainer_state.json").write_text("{not json")
    interrupted = tmp_path / "interrupted"
    shutil.copytree(whole, interrupted)
    newest = interrupted / "checkpoint-3"
    newest.mkdir()
    (newest / "trainer_state.json").write_text((good / "trainer_state.json").read_text())  # no weights: the save broke
    model_copy = tmp_path / "model"
    shutil.copytree(tiny_model, model_copy)
    list_json = tmp_path / "list.json"
    list_json.write_text("[]")
    finished = tmp_path / "finished"  # a run that saved only its final model
    finished.mkdir()
    (finished / "oasst_train.json").write_text("{}")
    shutil.copy(whole / "model.safetensors", finished / "model.safetensors")
    stage_9 = tmp_path / "stage9.json"
    stage_9.write_text(json.dumps({"zero_optimization": {"stage": 9}}))
    cases = [
        (dict(resume=str(not_a_checkpoint)), "not a complete checkpoint (no trainer_state.json"),
        (dict(resume=str(damaged_state)), "cannot read the checkpoint's trainer state"),
        (dict(resume=str(newest)), "checkpoint-3: the checkpoint holds no model weights"),
        (dict(output_dir=str(fixture_shards / "model")), "lies in the build"),
        (dict(output_dir=str(fixture_shards)), "lies in the build"),
        (dict(output_dir=str(model_copy), model_folder=model_copy), "is the --model folder"),
        # A fresh run there would mix checkpoints with the earlier run's (`--resume last` takes the highest step).
        (dict(output_dir=str(whole)), "holds checkpoints of an earlier run (checkpoint-1, checkpoint-2); --resume last (or auto) continues it"),
        (dict(output_dir=str(finished)), "holds the final model of an earlier run (model.safetensors); give a new folder"),
        (dict(output_dir=str(finished), resume="auto"), "holds the final model of an earlier run"),
        (dict(deepspeed=str(list_json)), "not a DeepSpeed config (expected a JSON object, got list)"),
        (dict(deepspeed=str(stage_9)), "zero_optimization.stage must be 0, 1, 2 or 3, got 9"),
    ]
    before = sorted(p.name for p in fixture_shards.iterdir()), (model_copy / "config.json").read_bytes()
    for overrides, message in cases:
        model = overrides.pop("model_folder", tiny_model)
        with pytest.raises(ConfigError, match=re.escape(message)):
            train(config(fixture_shards, model, tmp_path / "unused", max_steps=1, **overrides))
    assert (sorted(p.name for p in fixture_shards.iterdir()), (model_copy / "config.json").read_bytes()) == before
    assert not (tmp_path / "unused").exists()
    # `--resume last` passes over the interrupted checkpoint-3, naming it, and resumes checkpoint-2
    # (found by an audit: a kill during a save made every restart of `--resume auto` fail).
    killed_in_its_save = interrupted / "checkpoint-4"  # the weights written, trainer_state.json not yet
    killed_in_its_save.mkdir()
    shutil.copy(good / "model.safetensors", killed_in_its_save / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="oasst_data"):
        resumed = train(config(fixture_shards, tiny_model, interrupted, max_steps=3, save_steps=0, eval_steps=0, resume="last"))
    assert resumed.trainer.state.global_step == 3 and resumed.resumed_at == 2
    assert f"{killed_in_its_save}: not a complete checkpoint (no trainer_state.json" in caplog.text
    assert f"{newest}: the checkpoint holds no model weights (a save that was interrupted?); passed over" in caplog.text


def test_resume_auto_starts_afresh_then_continues_and_a_run_that_saved_nothing_is_no_obstacle(fixture_shards, tiny_model, tmp_path):
    """`--resume auto` is for a job a scheduler may start again with the same command: `last`
    fails on a new folder, and no `--resume` is refused once checkpoints exist."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "oasst_train.json").write_text("{}")  # a run stopped before it saved anything
    first = train(config(fixture_shards, tiny_model, out, max_steps=2, save_steps=1, eval_steps=0, resume="auto"))
    assert first.trainer.state.global_step == 2 and (out / "checkpoint-2").is_dir()
    again = train(config(fixture_shards, tiny_model, out, max_steps=3, save_steps=1, eval_steps=0, resume="auto"))
    assert again.trainer.state.global_step == 3
    history = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry][-1:] == [3]  # step 3 trained after resuming at 2
    with pytest.raises(ConfigError, match=r"--resume last: no complete checkpoint-\* folder in .* \(--resume auto starts afresh then\)"):
        train(config(fixture_shards, tiny_model, tmp_path / "new", max_steps=1, resume="last"))


def test_resume_auto_after_a_run_that_saved_no_checkpoint_trains_nothing_more(fixture_shards, tiny_model, tmp_path):
    """Found by a docs audit: after `--save-steps 0`, the identical restart of a finished
    `--resume auto` job failed ("holds the final model of an earlier run"), where one that had
    left checkpoints said "nothing left to train"."""
    out = tmp_path / "run"
    first = train(config(fixture_shards, tiny_model, out, max_steps=2, save_steps=0, eval_steps=0, resume="auto"))
    assert first.trainer.state.global_step == 2 and not list(out.glob("checkpoint-*"))
    assert json.loads((out / "oasst_train.json").read_text())["finished"] == {"global_step": 2}
    weights = (out / "model.safetensors").read_bytes()
    again = train(config(fixture_shards, tiny_model, out, max_steps=2, save_steps=0, eval_steps=0, resume="auto"))
    assert again.already_finished_at == 2 and again.trainer is None
    assert (out / "model.safetensors").read_bytes() == weights
    # Another configuration (more steps, with no checkpoint to continue from) is still refused,
    # and so is a final model whose run never recorded that it finished (a kill during its save).
    with pytest.raises(ConfigError, match="holds the final model of an earlier run"):
        train(config(fixture_shards, tiny_model, out, max_steps=3, save_steps=0, eval_steps=0, resume="auto"))
    # ... and so is the same command on shards rebuilt in place from other data (found by a review).
    record = json.loads((out / "oasst_train.json").read_text())
    (out / "oasst_train.json").write_text(json.dumps(record | {"shards": record["shards"] | {"data_sha256": "0" * 64}}))
    with pytest.raises(ConfigError, match="holds the final model of an earlier run"):
        train(config(fixture_shards, tiny_model, out, max_steps=2, save_steps=0, eval_steps=0, resume="auto"))
    # A final save cut by a signal (no finish recorded) and no checkpoint: the same run trains
    # again (found by a review: every restart was refused, so a requeued job failed forever).
    del record["finished"]
    (out / "oasst_train.json").write_text(json.dumps(record))
    retrained = train(config(fixture_shards, tiny_model, out, max_steps=2, save_steps=0, eval_steps=0, resume="auto"))
    assert retrained.trainer.state.global_step == 2
    assert json.loads((out / "oasst_train.json").read_text())["finished"] == {"global_step": 2}


def test_a_damaged_saved_tokenizer_is_named_by_its_checksum(fixture_shards, tiny_model, tmp_path):
    import shutil

    build = tmp_path / "build"
    shutil.copytree(fixture_shards, build)
    tokenizer_json = build / "tokenizer" / "tokenizer.json"
    tokenizer_json.write_bytes(tokenizer_json.read_bytes()[:1000])
    with pytest.raises(Exception, match="checksum differs: tokenizer/tokenizer.json"):
        train(config(build, tiny_model, tmp_path / "out", tokenizer=None, max_steps=1))
    # Without the checksums, loading it is still one clear error, not a JSONDecodeError.
    with pytest.raises(Exception, match="its files are damaged or not a tokenizer"):
        train(config(build, tiny_model, tmp_path / "out", tokenizer=None, max_steps=1, verify_checksums=False))


def test_a_wrong_tokenizer_is_named_before_the_shards_are_hashed(fixture_shards, tiny_model, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(str(FIXTURE_TOKENIZER))
    other.add_tokens(["a-token-the-build-never-had"])
    other.save_pretrained(str(tmp_path / "other-tokenizer"))
    build = tmp_path / "build"
    shutil.copytree(fixture_shards, build)
    shard = sorted(build.glob("data/train/*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")  # damaged too: the tokenizer is the first thing to name
    with pytest.raises(Exception, match="fingerprint"):
        train(config(build, tiny_model, tmp_path / "out", tokenizer=str(tmp_path / "other-tokenizer"), max_steps=1))
    with pytest.raises(Exception, match="shards do not match the manifest"):
        train(config(build, tiny_model, tmp_path / "out", max_steps=1))


def test_a_restart_of_a_finished_run_trains_nothing_and_finishes_its_final_model(fixture_shards, tiny_model, tmp_path):
    """Found by an audit: `--resume auto` on a run already at --max-steps trained one more step at
    each restart (the Trainer checks the limit after a step), rotating real checkpoints away."""
    out = tmp_path / "run"
    common = dict(max_steps=2, save_steps=1, eval_steps=0, resume="auto")
    train(config(fixture_shards, tiny_model, out, **common))
    final = (out / "model.safetensors").read_bytes()
    again = train(config(fixture_shards, tiny_model, out, **common))
    assert again.already_finished_at == 2 and again.trainer is None
    assert not (out / "checkpoint-3").exists() and (out / "model.safetensors").read_bytes() == final
    # Killed after its last checkpoint, before its final save: the checkpoint's model becomes it.
    for name in ("model.safetensors", "config.json"):
        (out / name).unlink()
    finished = train(config(fixture_shards, tiny_model, out, **common))
    assert finished.already_finished_at == 2
    assert (out / "model.safetensors").read_bytes() == (out / "checkpoint-2" / "model.safetensors").read_bytes()
    assert (out / "config.json").is_file() and not (out / "optimizer.pt").exists() and not (out / "trainer_state.json").exists()
    # A final save cut by a signal after the weights (found by a review): no tokenizer files, no
    # finish recorded. The checkpoint's model replaces it whole, and the finish is recorded.
    (out / "tokenizer.json").unlink()
    record = json.loads((out / "oasst_train.json").read_text())
    record.pop("finished", None)
    (out / "oasst_train.json").write_text(json.dumps(record))
    assert train(config(fixture_shards, tiny_model, out, **common)).already_finished_at == 2
    assert (out / "tokenizer.json").is_file() and json.loads((out / "oasst_train.json").read_text())["finished"] == {"global_step": 2}
    # A larger --max-steps continues the run, as before.
    longer = train(config(fixture_shards, tiny_model, out, **(common | dict(max_steps=3))))
    assert longer.trainer.state.global_step == 3


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_restart_of_a_run_counted_in_epochs_trains_nothing_once_finished(fixture_shards, tiny_model, tmp_path, accumulation):
    """Found by a review: with 1.5 epochs the Trainer ends inside the second epoch, and a restart
    re-entered it and took one more step each time. The run's steps are counted as it counts them."""
    from oasst_data.train.checkpoints import run_steps

    out = tmp_path / "run"
    common = dict(num_train_epochs=1.5, per_device_train_batch_size=2, gradient_accumulation_steps=accumulation, save_steps=1, eval_steps=0, resume="auto")
    first = train(config(fixture_shards, tiny_model, out, **common))
    assert first.trainer.state.max_steps == run_steps(0, 1.5, first.plan["batches_per_epoch"], 1, accumulation)
    again = train(config(fixture_shards, tiny_model, out, **common))
    assert again.already_finished_at == first.trainer.state.global_step
    assert not (out / f"checkpoint-{first.trainer.state.global_step + 1}").exists()
    more = train(config(fixture_shards, tiny_model, out, **(common | dict(num_train_epochs=2.0))))  # more epochs: trains on
    assert more.trainer.state.global_step > first.trainer.state.global_step


def test_the_steps_of_a_run_are_counted_as_the_trainer_counts_them():
    from oasst_data.train.checkpoints import run_steps

    assert run_steps(7, 3.0, 100, 2, 4) == 7  # --max-steps wins
    assert run_steps(0, 1.0, 9, 2, 2) == 3  # 5 batches a rank: 2 whole accumulations and a short one
    assert run_steps(0, 1.5, 8, 1, 2) == 6
    assert run_steps(0, 0.1, 3, 4, 8) == 1  # at least one step an epoch, rounded up


def test_a_checkpoint_with_weights_only_in_deepspeeds_folder_makes_no_final_model(tmp_path, caplog):
    """ZeRO-3 without gathering the weights at save: copying the rest would make a final model without weights."""
    from oasst_data.train.checkpoints import publish_final_model

    checkpoint, out = tmp_path / "checkpoint-2", tmp_path / "out"
    (checkpoint / "global_step2").mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="oasst_data"):
        assert publish_final_model(checkpoint, out) is False
    assert not out.exists() and "zero_to_fp32.py" in caplog.text


def test_a_checkpoint_resumes_only_on_the_engine_that_saved_it(tmp_path):
    """Found by an audit: a DeepSpeed checkpoint resumed without DeepSpeed silently started a fresh
    AdamW and lr schedule; a plain one under DeepSpeed failed after loading everything."""
    from oasst_data.train.checkpoints import check_same_engine

    plain, by_deepspeed = tmp_path / "plain", tmp_path / "deepspeed"
    plain.mkdir()
    (plain / "optimizer.pt").write_bytes(b"")
    (by_deepspeed / "global_step2").mkdir(parents=True)
    check_same_engine(plain, deepspeed=False)
    check_same_engine(by_deepspeed, deepspeed=True)
    with pytest.raises(ConfigError, match="saved without DeepSpeed .* resume it with --deepspeed none"):
        check_same_engine(plain, deepspeed=True)
    with pytest.raises(ConfigError, match="saved by DeepSpeed .* resume it with --deepspeed as it was trained"):
        check_same_engine(by_deepspeed, deepspeed=False)


def test_run_name_names_the_tensorboard_folder(fixture_shards, tiny_model, tmp_path, monkeypatch):
    """Found by an audit: --run-name said it named the TensorBoard run, but the logs went to runs/<date>_<host>."""
    import os

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = tmp_path / "run"
    train(config(fixture_shards, tiny_model, out, max_steps=1, eval_steps=0, report_to=["tensorboard"], run_name="myrun"))
    assert list((out / "runs" / "myrun").glob("events.out.tfevents.*"))
    assert [p.name for p in (out / "runs").iterdir()] == ["myrun"]
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_a_sigterm_to_the_whole_process_group_ends_training_with_143(fixture_shards, tiny_model, tmp_path):
    """Found by two audits: Slurm and `kill -- -PGID` signal the DataLoader workers too; torch then
    raised "DataLoader worker ... is killed by signal" from its SIGCHLD handler in the middle of the
    cleanup: exit 1 and a 70-line traceback."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "oasst_data_cli", "train", "--shards", str(fixture_shards), "--model", str(tiny_model),
        "--random-init", "--tokenizer", str(FIXTURE_TOKENIZER), "--dtype", "fp32", "--max-steps", "100000",
        "--eval-steps", "0", "--save-steps", "0", "--num-workers", "2", "--logging-steps", "1", "--output-dir", str(out),
    ]
    process = subprocess.Popen(args, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = []
        for line in process.stdout:
            seen.append(line)
            if "loss" in line and "step" in line:
                break
        os.killpg(process.pid, signal.SIGTERM)
        rest = process.stdout.read()
        process.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, "".join(seen) + rest
    assert "terminated (SIGTERM)" in rest
    assert "Traceback" not in rest and "Exception ignored" not in rest


def test_rows_wider_than_the_token_budget_are_warned_about(fixture_shards, tiny_model, tmp_path, caplog):
    """Found by an audit: a row longer than --batch-tokens came alone in a batch past the budget
    (a user sizes memory by it), without a word."""
    with caplog.at_level(logging.WARNING, logger="oasst_data"):
        train(config(fixture_shards, tiny_model, tmp_path / "run", max_steps=1, batch_tokens=16, pad_to_multiple_of=8, eval_steps=0))
    assert re.search(r"train: \d+ train row\(s\) are wider than --batch-tokens 16 once padded to a multiple of 8: each comes alone", caplog.text)


def test_old_checkpoints_are_rotated_only_once_the_new_one_is_complete(fixture_shards, tiny_model, tmp_path, monkeypatch):
    """A review: the Trainer deleted the checkpoints over --save-total-limit inside its save, before
    the batch plan that marks the new one complete was written; with a limit of 1 a kill in between
    left nothing to resume (`--resume auto` then started over)."""
    from oasst_data.train import trainer as trainer_module
    from oasst_data.train.checkpoints import checkpoint_problem

    seen = []
    rotate = trainer_module.rotate_checkpoints

    def watching_rotation(run_dir, **kwargs):
        newest = max(Path(run_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        seen.append((newest.name, checkpoint_problem(newest)))
        return rotate(run_dir, **kwargs)

    monkeypatch.setattr(trainer_module, "rotate_checkpoints", watching_rotation)
    out = tmp_path / "run"
    train(config(fixture_shards, tiny_model, out, max_steps=3, save_steps=1, save_total_limit=1, eval_steps=0))
    assert seen == [("checkpoint-1", None), ("checkpoint-2", None), ("checkpoint-3", None)]  # complete before any deletion
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
