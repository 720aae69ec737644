"""A thin `transformers.Trainer`: bucket batches in, token counts and a rich console log out.

Everything else -- DeepSpeed, mixed precision, gradient accumulation, checkpoints, resume,
TensorBoard / W&B -- is the Trainer's. The loss is normalised per trained token across the
batches of one optimizer step (and across devices) by the Trainer's `num_items_in_batch`,
which it passes to the model's loss: a token budget and fixed rows optimise the same objective.
The evaluation loss is per trained token too: its loop is this module's (the Trainer's averages
per-batch means, and repeats batches when the ranks' shares differ).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput, rotate_checkpoints

from ..atomic import atomic_write_bytes
from ..errors import ConfigError
from .collator import IGNORE_INDEX
from .checkpoints import BATCH_PLAN_FILE
from .config import TrainConfig, read_json_object
from .sampler import BatchPolicy, BucketBatchSampler, FixedRows, TokenBudget
from .shards import SplitRows

log = logging.getLogger("oasst_data.train")


def batch_policies(cfg: TrainConfig) -> tuple[BatchPolicy, BatchPolicy]:
    """(train, eval) policies: a token budget when given, else a fixed number of rows."""
    train: BatchPolicy = (
        TokenBudget(cfg.batch_tokens, cfg.pad_to_multiple_of) if cfg.batch_tokens else FixedRows(cfg.per_device_train_batch_size)
    )
    eval_tokens = cfg.eval_batch_tokens or cfg.batch_tokens
    evaluation: BatchPolicy = (
        TokenBudget(eval_tokens, cfg.pad_to_multiple_of) if eval_tokens else FixedRows(cfg.per_device_eval_batch_size)
    )
    return train, evaluation


def make_sampler(rows: SplitRows, policy: BatchPolicy, seed: int, shuffle: bool, batching: str = "buckets", **rank) -> BucketBatchSampler:
    # "random" batching (for comparison only) puts every row in one bucket.
    buckets = rows.buckets if batching == "buckets" else np.zeros_like(rows.buckets)
    return BucketBatchSampler(rows.lengths, buckets, policy, seed=seed, shuffle=shuffle, **rank)


def training_arguments(
    cfg: TrainConfig, dtype: str, has_eval: bool, deepspeed: str | None, use_configured_state: bool = False
) -> TrainingArguments:
    eval_strategy = "steps" if has_eval and cfg.eval_steps > 0 else "no"
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing (old name: a warning).
    checkpointing = "activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient"
    recompute = {
        f"{checkpointing}_checkpointing": cfg.gradient_checkpointing,
        f"{checkpointing}_checkpointing_kwargs": {"use_reentrant": False} if cfg.gradient_checkpointing else None,
    }
    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        # Linear warmup and decay without DeepSpeed. A DeepSpeed config with a scheduler replaces it:
        # zero2's WarmupDecayLR decays linearly too, but warms up by its warmup_type, "log" by default
        # (logarithmic), so the two warmups differ.
        lr_scheduler_type="linear",
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_train_epochs,
        # transformers counts epochs only when max_steps < 0: 0 would train one step at lr 0.
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps if eval_strategy == "steps" else None,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        fp16=dtype == "fp16",
        bf16=dtype == "bf16",
        # transformers takes bf16 without a GPU only when told the run is on the CPU.
        use_cpu=dtype == "bf16" and deepspeed is None and not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        **recompute,
        deepspeed=deepspeed,
        report_to=cfg.report_to,
        run_name=cfg.run_name,
        seed=cfg.seed,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        prediction_loss_only=True,  # evaluation keeps the loss, never the logits
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        disable_tqdm=True,  # the console log is RichLogCallback's
        # True when run.py has set up accelerate's process state itself (DeepSpeed on CPUs).
        accelerator_config={"use_configured_state": use_configured_state},
    )


class BucketTrainer(Trainer):
    """`Trainer` whose data loaders draw batches from one length bucket at a time."""

    def __init__(self, *args, train_policy: BatchPolicy, eval_policy: BatchPolicy, batching: str = "buckets", **kwargs):
        super().__init__(*args, **kwargs)
        self.train_policy = train_policy
        self.eval_policy = eval_policy
        self.batching = batching
        self.token_counts = TokenCounts()
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)
        self.add_callback(_BucketTrainerHooks(self))

    def batch_plan(self) -> dict[str, Any]:
        """What decides the batch order of this run (see `batch_plan`), as saved in each checkpoint."""
        return batch_plan(
            self.train_dataset, self.train_policy, self.args.seed, self.batching, self.args.world_size,
            self.args.gradient_accumulation_steps,
        )

    def _loader(self, rows: SplitRows, sampler: BucketBatchSampler, persistent: bool) -> DataLoader:
        workers = self.args.dataloader_num_workers
        return DataLoader(
            rows,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=persistent and workers > 0,
        )

    def get_train_dataloader(self) -> DataLoader:
        self.train_sampler = make_sampler(self.train_dataset, self.train_policy, self.args.seed, True, self.batching)
        # The sampler plans the global batch order; accelerate's BatchSamplerShard deals it out
        # (batch i to rank i mod world size) and skips batches on resume.
        prepared = self.accelerator.prepare(self._loader(self.train_dataset, self.train_sampler, persistent=True))
        keep_epoch_reachable(prepared, self.train_sampler)
        return prepared

    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader:
        """This rank's share of the validation batches, by the sampler's own rule (batch i to rank
        i mod world size). Not prepared by accelerate, which would keep a reference to every
        evaluation's loader (and its worker processes) for the rest of the run."""
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        rows = eval_dataset if eval_dataset is not None else self.eval_dataset
        sampler = make_sampler(
            rows, self.eval_policy, self.args.seed, False, self.batching, rank=self.args.process_index, world_size=self.args.world_size
        )
        return self._loader(rows, sampler, persistent=False)

    def evaluation_loop(
        self, dataloader: DataLoader, description: str, prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """The loss per trained token of the whole split, the quantity training minimises.

        Each rank sums the loss over its own batches' trained tokens; one all-reduce adds the ranks.
        When the batches do not divide among the ranks, a rank short of one runs a repeat of its
        first batch uncounted, so every rank runs the same forward passes (ZeRO-3 needs that).
        """
        sampler = dataloader.batch_sampler
        if not isinstance(sampler, BucketBatchSampler):  # a loader from elsewhere: the Trainer's own loop
            return super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        model = self._model_for_evaluation()
        model.eval()
        self.callback_handler.eval_dataloader = dataloader
        device = self.args.device
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # summed loss, trained tokens, rows
        for index, inputs in enumerate(dataloader):
            loss_sum = self._summed_token_loss(model, inputs)
            if index * sampler.world_size + sampler.rank < sampler.num_batches:  # else a repeat that keeps this rank in step
                totals[0] += loss_sum.to(torch.float64)
                totals[1] += int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())  # the batch is on the host: no sync
                totals[2] += len(inputs["labels"])
            self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        loss_sum, tokens, rows = totals.tolist()
        metrics = {
            f"{metric_key_prefix}_loss": loss_sum / tokens if tokens else float("nan"),
            f"{metric_key_prefix}_trained_tokens": int(tokens),
        }
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=int(rows))

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, then its batch plan, then the rotation of old checkpoints.

        The plan marks a checkpoint whole (`checkpoint_problem`): every rank has written its own
        RNG state when the ranks meet at the barrier, then rank 0 writes it (a kill before left
        one that resumed with rank 1's RNG missing). The Trainer deletes the checkpoints over
        --save-total-limit inside its save, before any callback: with a limit of 1, a kill before
        the plan was written left no checkpoint to resume (a review), so this rotates after it.
        """
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()
        run_dir = self._get_output_dir(trial=trial)
        folder = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save and folder.is_dir():
            text = json.dumps(self.batch_plan(), indent=1) + "\n"
            atomic_write_bytes(folder / BATCH_PLAN_FILE, text.encode("utf-8"))  # whole or absent after a kill
            rotate_checkpoints(run_dir, save_total_limit=limit, best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def _summed_token_loss(self, model, inputs: dict) -> torch.Tensor:
        """Next-token cross-entropy summed over the batch's trained tokens. Not the model's own
        loss: under several ranks the Trainer divides that by a token count gathered from all of
        them, which is right for a training step and wrong for one rank's share of a split."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
            # Shift the labels, not the logits (no copy of the largest tensor), as transformers' loss does.
            labels = torch.nn.functional.pad(inputs["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
            return torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten().to(logits.device), ignore_index=IGNORE_INDEX, reduction="sum"
            )

    def _model_for_evaluation(self):
        """The model to evaluate: prepared by training, or prepared here as the Trainer's own loop
        would when evaluation comes first."""
        if self.is_deepspeed_enabled and self.deepspeed is None:
            from transformers.integrations.deepspeed import deepspeed_init

            deepspeed_init(self, num_training_steps=0, inference=True)
        model = self._wrap_model(self.model, training=False)
        if len(self.accelerator._models) == 0 and model is self.model:
            model = self.accelerator.prepare(model) if self.is_deepspeed_enabled else self.accelerator.prepare_model(model, evaluation_mode=True)
            if model is not self.model:
                self.model_wrapped = model
            if self.is_deepspeed_enabled:
                self.deepspeed = self.model_wrapped
        return model

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # The Trainer resumes (without DeepSpeed) by loading the raw saved state dict, but
        # save_pretrained may store weights under their hub names (transformers 5 saves GPT-NeoX's
        # lm_head as embed_out), which would leave them untrained. from_pretrained maps the names.
        target = model if model is not None else self.model
        saved = _saved_weight_names(resume_from_checkpoint)
        if saved is None or saved == set(target.state_dict()):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        log.info("loading %s through from_pretrained (saved weight names differ from the model's)", resume_from_checkpoint)
        dtype = next(target.parameters()).dtype
        fresh = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype, attn_implementation=target.config._attn_implementation)
        target.load_state_dict(fresh.state_dict())
        del fresh

    def _finalize_training(self, *args, **kwargs):
        # transformers adds the loss of the steps since the last log to the run's mean train loss
        # from this rank alone, where logging takes the mean over ranks. With the loss normalised
        # per token across ranks, one rank's share is not the loss (2 ranks: 11.94 vs 10.85).
        if self.args.world_size > 1 and torch.is_tensor(getattr(self, "_tr_loss", None)):
            self._tr_loss = self.accelerator.gather(self._tr_loss.detach().reshape(1)).mean()
        # transformers counts samples as steps x per_device_train_batch_size x ranks, which a token
        # budget (rows per batch vary by bucket) gets wrong; `log` uses the rows really trained.
        rows = torch.tensor([self.token_counts.rows], device=self.accelerator.device)
        if self.args.world_size > 1:
            rows = self.accelerator.gather(rows)
        self._rows_trained = int(rows.sum())
        return super()._finalize_training(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.token_counts.add(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            logs.update(self.token_counts.since_last_log())
        rows = getattr(self, "_rows_trained", 0)
        if "train_samples_per_second" in logs and rows and logs.get("train_runtime"):
            logs["train_samples_per_second"] = round(rows / logs["train_runtime"], 3)
        super().log(logs, *args, **kwargs)


class _BucketTrainerHooks(TrainerCallback):
    """BucketTrainer's own events: starts the tokens/s clock when training begins."""

    def __init__(self, trainer: BucketTrainer) -> None:
        self._trainer = weakref.ref(trainer)

    def on_train_begin(self, args, state, control, **kwargs):
        # Not from the Trainer's construction: DeepSpeed's initialisation (and its JIT-compiled ops),
        # the optimizer's creation and the model's wrapping come in between, and would count as
        # training time in the first tokens/s reading.
        trainer = self._trainer()
        if trainer is not None:
            trainer.token_counts.restart_clock()


def policy_text(policy: BatchPolicy) -> str:
    pad = getattr(policy, "pad_to_multiple_of", None)
    return policy.describe() + (f", padded to a multiple of {pad}" if pad and pad > 1 else "")


def batch_plan(
    rows: SplitRows, policy: BatchPolicy, seed: int, batching: str, world_size: int, gradient_accumulation_steps: int
) -> dict[str, Any]:
    """The values that decide which batches a resumed run skips and which it trains next.

    The Trainer resumes by skipping the batches of the steps already trained (accelerate's
    `skip_first_batches`, counted as steps x accumulation on each rank), not through the
    sampler's `state_dict`: the skipped batches are the ones trained only when the seed, the
    policy, the batching, the train rows, the world size and the accumulation are the same.
    """
    sampler = make_sampler(rows, policy, seed, True, batching)
    digest = hashlib.sha256(np.ascontiguousarray(rows.lengths, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(rows.buckets, dtype=np.int64).tobytes())
    return {
        "seed": int(seed),
        "policy": policy_text(policy),
        "batching": batching,
        "world_size": int(world_size),
        "gradient_accumulation_steps": int(gradient_accumulation_steps),
        "num_batches": int(sampler.num_batches),
        "train_rows": len(rows),
        "train_rows_sha256": digest.hexdigest()[:16],  # of the rows' lengths and buckets
    }


def check_resume_plan(checkpoint: str | Path, current: dict[str, Any]) -> None:
    """Refuse to resume `checkpoint` on another batch plan than the one it was saved with (a
    checkpoint without one is incomplete: `checkpoint_problem` refuses it before)."""
    path = Path(checkpoint) / BATCH_PLAN_FILE
    saved = read_json_object(path, "the checkpoint's batch plan")
    differ = [f"{key} {saved[key]!r}, now {value!r}" for key, value in current.items() if key in saved and saved[key] != value]
    if differ:
        raise ConfigError(
            f"--resume {checkpoint}: the checkpoint was trained on another batch plan ({'; '.join(differ)}): resuming "
            "would skip other batches than the ones it trained; resume with the settings it was saved with "
            f"(its {BATCH_PLAN_FILE}), or start a new run"
        )


def keep_epoch_reachable(loader: Any, sampler: BucketBatchSampler) -> None:
    """Let the epoch reach `sampler` however accelerate wraps it.

    accelerate's `DataLoaderShard.set_epoch` looks for `set_epoch` on the loader's batch sampler,
    on its `.sampler`, and on `.batch_sampler.sampler`. On several processes ours sits inside a
    `BatchSamplerShard`; a mid-epoch resume wraps that in a `SkipBatchSampler`, which puts ours
    out of reach: the resumed epoch then replays epoch 0's batch order. Naming ours as the shard's
    `sampler` keeps it reachable with and without the skip wrapper.
    """
    shard = getattr(loader, "batch_sampler", None)
    if shard is not None and shard is not sampler and getattr(shard, "batch_sampler", None) is sampler:
        shard.sampler = sampler


def _saved_weight_names(folder: str) -> set[str] | None:
    """Tensor names of a checkpoint's safetensors weights (None: not safetensors)."""
    single, index = Path(folder) / "model.safetensors", Path(folder) / "model.safetensors.index.json"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return set(handle.keys())
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    return None


class TokenCounts:
    """Real, padded and trained tokens of the batches trained on this device (no GPU sync per step).

    Everything here is this rank's: the tokens/s and padding share logged (and shown on the
    console, by rank 0) are rank 0's batches, not the whole job's; with N ranks of similar
    batches the job trains about N times the tokens/s shown. The clock starts when training
    begins (`restart_clock`, from BucketTrainer's on_train_begin), not when the Trainer is made.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.real: Any = 0
        self.trained: Any = 0
        self.real_squared: Any = 0  # sum of squared row lengths: the attention term of model FLOPs
        self.padded = 0
        self._last = (0, 0, time.perf_counter())

    def add(self, inputs: dict) -> None:
        row_lengths = inputs["attention_mask"].sum(dim=1)
        self.rows += int(inputs["input_ids"].shape[0])
        self.real = self.real + row_lengths.sum()
        self.real_squared = self.real_squared + (row_lengths * row_lengths).sum()
        self.trained = self.trained + (inputs["labels"] != IGNORE_INDEX).sum()
        self.padded += int(inputs["input_ids"].numel())

    def restart_clock(self) -> None:
        """The next tokens/s reading counts from now."""
        self._last = (int(self.real), self.padded, time.perf_counter())

    def totals(self) -> dict[str, int]:
        return {"rows": self.rows, "real": int(self.real), "trained": int(self.trained), "padded": self.padded, "real_squared": int(self.real_squared)}

    def since_last_log(self) -> dict[str, float]:
        real, padded, now = int(self.real), self.padded, time.perf_counter()
        last_real, last_padded, last_time = self._last
        self._last = (real, padded, now)
        if padded == last_padded:
            return {}
        return {
            "tokens_per_second": round((real - last_real) / max(now - last_time, 1e-9), 1),
            "padding_share": round(1.0 - (real - last_real) / (padded - last_padded), 4),
        }


class RichLogCallback(TrainerCallback):
    """One console line per log event on the main process (through `logging`, rendered by rich).

    Its tokens/s and padding are rank 0's own batches (`TokenCounts`), not the job's; the loss
    and the evaluation loss are the job's.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        parts = [f"step {state.global_step:,}/{state.max_steps:,}"]
        if state.epoch is not None:
            parts.append(f"epoch {state.epoch:.2f}")
        for key, fmt in (
            ("loss", "loss {:.4f}"),
            ("eval_loss", "eval loss {:.4f}"),
            ("train_loss", "mean train loss {:.4f}"),
            ("learning_rate", "lr {:.2e}"),
            ("grad_norm", "grad norm {:.3f}"),
            ("tokens_per_second", "{:,.0f} tokens/s"),
            ("padding_share", "padding {:.1%}"),
            ("train_runtime", "{:.0f} s"),
        ):
            if key in logs and logs[key] is not None:
                parts.append(fmt.format(float(logs[key])))
        log.info(" · ".join(parts))
