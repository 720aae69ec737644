"""`oasst-data train`: fine-tune a causal LM on a build's shards (needs the `train` extra).

Settings: defaults < --preset (in order) < flags. torch and transformers are imported only
when the command runs, so the rest of the CLI starts quickly. Several GPUs:
`deepspeed --num_gpus N --no_local_rank --module oasst_data_cli train ...` (the launcher would
otherwise put --local_rank before `train`; every rank reads LOCAL_RANK from the environment).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from oasst_data.train.config import field_help

from .console import err_console, error_label, shown, user_errors

# What `pip install oasst-data[train]` adds that training cannot start without (DeepSpeed is checked
# where it is used: --deepspeed none trains without it).
TRAIN_EXTRA = ("torch", "accelerate")

def train_install_steps() -> str:
    """How to install the train extra from here, in the README's order: torch decides which build
    DeepSpeed (a source package) is compiled against, so neither may come from a bare extra first."""
    steps = []
    if importlib.util.find_spec("torch") is None:
        steps.append("install torch first (the build for your CUDA, or the CPU one)")
    if importlib.util.find_spec("deepspeed") is None:
        steps.append("DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed (built against that torch)")
    steps.append("pip install 'oasst-data[train]'")
    return ", then ".join(steps) + " (README, Training)"


_DATA = "Data and model"
_BATCH = "Batches"
_OPT = "Optimisation"
_RUN = "Run"


def _opt(flag: str, name: str, panel: str, *extra: str, **kwargs) -> typer.models.OptionInfo:
    return typer.Option(flag, *extra, help=field_help(name), rich_help_panel=panel, show_default=False, **kwargs)


def train(
    shards: Annotated[Optional[Path], _opt("--shards", "shards", _DATA)] = None,
    model: Annotated[Optional[str], _opt("--model", "model", _DATA)] = None,
    tokenizer: Annotated[Optional[str], _opt("--tokenizer", "tokenizer", _DATA)] = None,
    random_init: Annotated[Optional[bool], _opt("--random-init/--pretrained", "random_init", _DATA)] = None,
    output_dir: Annotated[Optional[str], _opt("--output-dir", "output_dir", _RUN)] = None,
    preset: Annotated[
        Optional[list[str]],
        typer.Option("--preset", help="Preset name (e.g. reference-pythia-12b) or YAML file; repeatable, later ones win.", rich_help_panel=_RUN),
    ] = None,
    dtype: Annotated[Optional[str], _opt("--dtype", "dtype", _OPT)] = None,
    attn_implementation: Annotated[Optional[str], _opt("--attn-implementation", "attn_implementation", _DATA)] = None,
    gradient_checkpointing: Annotated[Optional[bool], _opt("--gradient-checkpointing/--no-gradient-checkpointing", "gradient_checkpointing", _OPT)] = None,
    residual_dropout: Annotated[Optional[float], _opt("--residual-dropout", "residual_dropout", _OPT)] = None,
    max_length: Annotated[Optional[int], _opt("--max-length", "max_length", _DATA)] = None,
    per_device_batch_size: Annotated[Optional[int], _opt("--per-device-batch-size", "per_device_train_batch_size", _BATCH)] = None,
    per_device_eval_batch_size: Annotated[Optional[int], _opt("--per-device-eval-batch-size", "per_device_eval_batch_size", _BATCH)] = None,
    batch_tokens: Annotated[Optional[int], _opt("--batch-tokens", "batch_tokens", _BATCH)] = None,
    eval_batch_tokens: Annotated[Optional[int], _opt("--eval-batch-tokens", "eval_batch_tokens", _BATCH)] = None,
    pad_to_multiple_of: Annotated[Optional[int], _opt("--pad-to-multiple-of", "pad_to_multiple_of", _BATCH)] = None,
    batching: Annotated[Optional[str], _opt("--batching", "batching", _BATCH)] = None,
    gradient_accumulation_steps: Annotated[Optional[int], _opt("--gradient-accumulation-steps", "gradient_accumulation_steps", _OPT)] = None,
    learning_rate: Annotated[Optional[float], _opt("--learning-rate", "learning_rate", _OPT)] = None,
    weight_decay: Annotated[Optional[float], _opt("--weight-decay", "weight_decay", _OPT)] = None,
    warmup_steps: Annotated[Optional[int], _opt("--warmup-steps", "warmup_steps", _OPT)] = None,
    max_grad_norm: Annotated[Optional[float], _opt("--max-grad-norm", "max_grad_norm", _OPT)] = None,
    num_epochs: Annotated[Optional[float], _opt("--num-epochs", "num_train_epochs", _OPT)] = None,
    max_steps: Annotated[Optional[int], _opt("--max-steps", "max_steps", _OPT)] = None,
    eval_steps: Annotated[Optional[int], _opt("--eval-steps", "eval_steps", _RUN)] = None,
    save_steps: Annotated[Optional[int], _opt("--save-steps", "save_steps", _RUN)] = None,
    save_total_limit: Annotated[Optional[int], _opt("--save-total-limit", "save_total_limit", _RUN)] = None,
    logging_steps: Annotated[Optional[int], _opt("--logging-steps", "logging_steps", _RUN)] = None,
    deepspeed: Annotated[Optional[str], _opt("--deepspeed", "deepspeed", _RUN)] = None,
    report_to: Annotated[Optional[str], _opt("--report-to", "report_to", _RUN)] = None,
    run_name: Annotated[Optional[str], _opt("--run-name", "run_name", _RUN)] = None,
    resume: Annotated[Optional[str], _opt("--resume", "resume", _RUN)] = None,
    seed: Annotated[Optional[int], _opt("--seed", "seed", _RUN)] = None,
    num_workers: Annotated[Optional[int], _opt("--num-workers", "dataloader_num_workers", _RUN)] = None,
    verify_checksums: Annotated[Optional[bool], _opt("--verify-checksums/--no-verify-checksums", "verify_checksums", _DATA)] = None,
) -> None:
    """Fine-tune a causal LM on the shards of `oasst-data build` (Hugging Face Trainer, optional DeepSpeed)."""
    from oasst_data.train.config import resolve_config

    with user_errors():
        config = resolve_config(
            preset or [],
            shards=str(shards) if shards else None,
            model=model,
            tokenizer=tokenizer,
            random_init=random_init,
            output_dir=output_dir,
            dtype=dtype,
            attn_implementation=attn_implementation,
            gradient_checkpointing=gradient_checkpointing,
            residual_dropout=residual_dropout,
            max_length=max_length,
            per_device_train_batch_size=per_device_batch_size,
            per_device_eval_batch_size=per_device_eval_batch_size,
            batch_tokens=batch_tokens,
            eval_batch_tokens=eval_batch_tokens,
            pad_to_multiple_of=pad_to_multiple_of,
            batching=batching,
            gradient_accumulation_steps=gradient_accumulation_steps,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            max_grad_norm=max_grad_norm,
            num_train_epochs=num_epochs,
            max_steps=max_steps,
            eval_steps=eval_steps,
            save_steps=save_steps,
            save_total_limit=save_total_limit,
            logging_steps=logging_steps,
            deepspeed=deepspeed,
            report_to=report_to.split(",") if report_to else None,
            run_name=run_name,
            resume=resume,
            seed=seed,
            dataloader_num_workers=num_workers,
            verify_checksums=verify_checksums,
        )
        # torch is imported only when training starts: ask for the extra before, not by a traceback then.
        absent = [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]
        try:
            if absent:
                raise ImportError(name=", ".join(absent))
            from oasst_data.train.run import train as run_training
        except ImportError as error:
            missing = shown(f"training needs the train extra ({error.name or error} is missing): {train_install_steps()}")
            err_console.print(f"[bold red]{error_label()}[/] {missing}", highlight=False)
            raise typer.Exit(1) from None
        outcome = run_training(config)
        if outcome.already_finished_at is not None:
            if int(os.environ.get("RANK", "0") or 0) == 0:
                err_console.print(shown(f"nothing left to train: the run is at step {outcome.already_finished_at}; model in {outcome.output_dir}"))
        elif outcome.trainer is None or outcome.trainer.is_world_process_zero():
            summary = f"trained: {outcome.train_metrics.get('train_loss', float('nan')):.4f} mean train loss"
            if outcome.resumed_at is not None and outcome.trainer is not None:
                # The Trainer's mean covers this session's steps only, not the run's.
                summary += f" over steps {outcome.resumed_at + 1}-{outcome.trainer.state.global_step} (resumed at {outcome.resumed_at})"
            if "eval_loss" in outcome.eval_metrics:
                summary += f", {outcome.eval_metrics['eval_loss']:.4f} eval loss"
            err_console.print(shown(f"{summary}; model in {outcome.output_dir}"))
