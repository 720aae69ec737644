"""One optimizer step of `oasst_data.train.train` under the deepspeed launcher, and its gradient.

Started by tests/train/test_deepspeed_cpu.py (not collected by pytest):

    python -m deepspeed.launcher.runner --num_gpus 2 --no_local_rank tests/train/zero2_gradient_probe.py SHARDS MODEL TOKENIZER WORK

ZeRO-2 with SGD (learning rate 1, no clipping, no scheduler, no dropout) makes one optimizer
step's weight change minus the gradient DeepSpeed applied. Every rank records the micro-batches
it trained on; rank 0 then computes, on a plain copy of the initial model, the gradient the
trainer promises -- the mean loss over every trained token of the step, across its accumulated
micro-batches and all ranks -- and writes both, with the gradient of the per-batch-mean objective
(what an unnormalised loss would give) for contrast, to WORK/probe.json. It adds the validation
loss the two ranks computed together after training and, for comparison, the loss per trained
token computed row by row on rank 0 alone.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from oasst_data.train.collator import IGNORE_INDEX
from oasst_data.train.config import resolve_config
from oasst_data.train.run import packaged_deepspeed_config, train

# Validation batches that do not divide between 2 ranks: one rank runs an uncounted repeat.
EVAL_BATCH_TOKENS = 64


def sgd_zero2_config(work: Path) -> Path:
    """The shipped ZeRO-2 config with SGD and no scheduler: the weight change is the gradient."""
    config = json.loads(packaged_deepspeed_config().read_text())
    config["optimizer"] = {"type": "SGD", "params": {"lr": "auto"}}
    config["zero_allow_untested_optimizer"] = True
    del config["scheduler"]
    path = work / "zero2-sgd.json"
    path.write_text(json.dumps(config))
    return path


def token_loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the trained tokens of one batch, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, int((labels != IGNORE_INDEX).sum())


def flat_gradient(model, batches: list[dict], per_token: bool) -> torch.Tensor:
    model.zero_grad()
    sums = [token_loss_sum(model, batch) for batch in batches]
    if per_token:  # the promise: one mean over every trained token of the step
        objective = sum(loss for loss, _ in sums) / sum(count for _, count in sums)
    else:  # the mean of per-batch means
        objective = sum(loss / count for loss, count in sums) / len(sums)
    objective.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def main(shards: str, model: str, tokenizer: str, work: str) -> None:
    out = Path(work)
    cfg = resolve_config(
        ["reference-pythia-12b"],  # accumulation 2, gradient checkpointing, the seed's ZeRO-2 layout
        shards=shards,
        model=model,
        random_init=True,
        tokenizer=tokenizer,
        output_dir=str(out / "run"),
        dtype="fp32",
        deepspeed=str(sgd_zero2_config(out)),
        learning_rate=1.0,
        warmup_steps=0,
        max_grad_norm=0.0,  # no clipping
        residual_dropout=0.0,
        batch_tokens=96,  # micro-batches of 1-3 rows: their trained-token counts differ
        eval_batch_tokens=EVAL_BATCH_TOKENS,
        max_steps=1,
        eval_steps=0,
        save_steps=0,
        logging_steps=1,
        seed=5,
    )
    initial: dict = {}
    trained_on: list[dict] = []

    def capture(trainer) -> None:
        initial["model"] = copy.deepcopy(trainer.model).float().eval()
        step = trainer.training_step

        def recording_step(model, inputs, num_items_in_batch=None):
            trained_on.append({k: inputs[k].detach().clone() for k in ("input_ids", "attention_mask", "labels")})
            return step(model, inputs, num_items_in_batch)

        trainer.training_step = recording_step

    class CompareAtTheEnd(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            everyone: list = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, trained_on)
            if dist.get_rank() == 0:
                compare(initial["model"], model, everyone, out / "probe.json")

    outcome = train(cfg, callbacks=[CompareAtTheEnd()], on_trainer=capture)
    if outcome.trainer.args.process_index == 0:  # the evaluation after training ran on both ranks (whose group train() has closed)
        result = json.loads((out / "probe.json").read_text())
        trainer = outcome.trainer
        result["eval_batches"] = trainer.get_eval_dataloader().batch_sampler.num_batches
        result["eval_loss"] = outcome.eval_metrics["eval_loss"]
        result["eval_trained_tokens"] = outcome.eval_metrics["eval_trained_tokens"]
        result["reference_eval_loss"], result["reference_eval_tokens"] = per_token_loss(trainer.model, trainer.eval_dataset, trainer.data_collator)
        (out / "probe.json").write_text(json.dumps(result, indent=2))


def per_token_loss(model, rows, collate) -> tuple[float, int]:
    """The validation loss per trained token, one row at a time on this process alone."""
    model = model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for index in range(len(rows)):
            loss, count = token_loss_sum(model, collate([rows[index]]))
            total, tokens = total + float(loss), tokens + count
    return total / tokens, tokens


def compare(reference, trained, everyone: list[list[dict]], result_path: Path) -> None:
    before = torch.cat([p.detach().flatten() for p in reference.parameters()])
    after = torch.cat([p.detach().float().flatten() for p in trained.parameters()])
    batches = [batch for rank_batches in everyone for batch in rank_batches]
    applied = before - after  # SGD at rate 1: the gradient DeepSpeed stepped with
    promised = flat_gradient(reference, batches, per_token=True)
    per_batch_mean = flat_gradient(reference, batches, per_token=False)
    result = {
        "ranks": len(everyone),
        "micro_batches_per_rank": [len(rank_batches) for rank_batches in everyone],
        "rows_per_batch": [int(b["input_ids"].shape[0]) for b in batches],
        "trained_tokens_per_batch": [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches],
        "gradient_norm": float(promised.norm()),
        "relative_error": float((applied - promised).norm() / promised.norm()),
        "per_batch_mean_relative_error": float((per_batch_mean - promised).norm() / promised.norm()),
    }
    result_path.write_text(json.dumps(result, indent=2))

if __name__ == "__main__":
    # Without --no_local_rank the launcher puts --local_rank=N first; it is in the environment too.
    main(*[arg for arg in sys.argv[1:] if not arg.startswith("--local_rank")][:4])
