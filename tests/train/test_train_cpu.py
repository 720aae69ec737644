"""End to end on a CPU: a tiny random GPT-NeoX trains on the fixture shards, evaluates, resumes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

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
    MEASURED.append(
        f"tiny GPT-NeoX, {batching}: loss {start:.3f} -> {end:.3f} in 40 steps; eval loss "
        f"{outcome.eval_metrics['eval_loss']:.3f}; padding {1 - counts['real'] / counts['padded']:.1%}"
    )


def test_resuming_a_checkpoint_mid_epoch_gives_the_uninterrupted_run(fixture_shards, tiny_model, tmp_path):
    common = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=6, eval_steps=0, learning_rate=1e-3)
    whole = train(config(fixture_shards, tiny_model, tmp_path / "whole", save_steps=3, **common))
    checkpoint = tmp_path / "whole" / "checkpoint-3"
    assert checkpoint.is_dir()
    # 8 train rows in batches of 2, 2 per step: step 3 ends in the middle of the second epoch.
    assert whole.trainer.state.log_history[2]["epoch"] % 1 != 0
    resumed = train(config(fixture_shards, tiny_model, tmp_path / "resumed", resume=str(checkpoint), **common))
    assert resumed.trainer.state.global_step == 6
    assert losses(resumed)[-3:] == pytest.approx(losses(whole)[-3:], rel=1e-5)
    for (name, a), (_, b) in zip(whole.trainer.model.named_parameters(), resumed.trainer.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


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
    with caplog.at_level(logging.INFO):
        done = runner.invoke(app, [*base, "--tokenizer", str(FIXTURE_TOKENIZER), "--output-dir", str(tmp_path / "cli"), "--max-steps", "2", "--batch-tokens", "256", "--report-to", "tensorboard"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    assert list((tmp_path / "cli").rglob("events.out.tfevents.*"))  # --report-to tensorboard
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
