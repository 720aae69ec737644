"""Which Trainer checkpoint a run resumes from, and whether it can: complete, saved by the same
engine (DeepSpeed or not), and not already at the run's last step. No torch needed."""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path

from ..errors import ConfigError
from .config import read_json_object

log = logging.getLogger("oasst_data.train")

# The Trainer's checkpoint folders: an output folder holding them holds an earlier run.
PREFIX_CHECKPOINT = "checkpoint-"
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
# What a Trainer checkpoint holds the weights in (one file, or an index of several).
CHECKPOINT_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
# Written into each checkpoint folder, last, once every rank's files are there: the settings that
# decide the batch order (`trainer.batch_plan`), and the world size they were saved by.
BATCH_PLAN_FILE = "oasst_batch_plan.json"
# What a checkpoint holds besides the model a final save writes (config, weights, tokenizer, args).
_TRAINING_STATE = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "scaler.pt", "latest", "zero_to_fp32.py")


def resume_checkpoint(value: str | None, output_dir: str) -> str | None:
    """The checkpoint to resume from: a folder, the newest complete one in output_dir ('last';
    'auto': or None when there is none, for a job a scheduler may start again with the same command)."""
    if value is None:
        return None
    if value in ("last", "auto"):
        newest = newest_complete_checkpoint(Path(output_dir))
        if newest is None:
            if value == "auto":
                return None
            raise ConfigError(f"--resume last: no complete checkpoint-* folder in {output_dir} (--resume auto starts afresh then)")
        return str(newest)
    if not Path(value).is_dir():
        raise ConfigError(f"--resume {value}: no such checkpoint folder")
    check_checkpoint(Path(value))
    return value


def newest_complete_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint-N folder with the highest N that the Trainer can resume from.

    A run killed while saving leaves a folder without trainer_state.json (the Trainer writes it
    last): taking it would stop every restart of `--resume auto`, so it is passed over, named.
    """
    if not output_dir.is_dir():
        return None
    found = [(int(match.group(1)), path) for path in output_dir.iterdir() if (match := _CHECKPOINT_NAME.fullmatch(path.name)) and path.is_dir()]
    passed_over = False
    for _, folder in sorted(found, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        log.warning("%s: %s; passed over (delete it)", folder, problem)
        passed_over = True
    if passed_over:
        log.warning("%s: no complete checkpoint to resume", output_dir)
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why the Trainer cannot resume from `folder` (not a checkpoint, a damaged trainer state, no
    weights: a save that was interrupted), or None."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "not a complete checkpoint (no trainer_state.json: a save that was interrupted?)"
    try:
        read_json_object(state, "the checkpoint's trainer state")
    except ConfigError as error:
        return str(error).removeprefix(f"{state}: ")
    if not any((folder / name).is_file() for name in CHECKPOINT_WEIGHTS) and not any(folder.glob("global_step*")):
        return "the checkpoint holds no model weights (a save that was interrupted?)"
    plan = folder / BATCH_PLAN_FILE
    if not plan.is_file():
        return (
            f"not a complete checkpoint (no {BATCH_PLAN_FILE}, written once every rank saved: a save that was interrupted, "
            "or one saved by an oasst-data without batch plans)"
        )
    try:
        world_size = read_json_object(plan, "the checkpoint's batch plan").get("world_size")
    except ConfigError as error:
        return str(error).removeprefix(f"{plan}: ")
    if isinstance(world_size, int) and not isinstance(world_size, bool):
        # Each rank saves its own RNG state (the Trainer's naming); without it, the resumed rank
        # draws other dropout masks than the uninterrupted run would.
        expected = ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]
        missing = [name for name in expected if not (folder / name).is_file()]
        if missing:
            return f"not a complete checkpoint (no {missing[0]}: that rank's save was interrupted?)"
    return None


def check_checkpoint(folder: Path) -> None:
    """Refuse a folder the Trainer cannot resume from, before the model is loaded."""
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise ConfigError(f"--resume {folder}: {problem}; give a complete checkpoint-N folder of an earlier run")


def check_same_engine(folder: Path, deepspeed: bool) -> None:
    """Refuse to resume a DeepSpeed checkpoint without DeepSpeed, or the reverse.

    The optimizer and lr schedule are in DeepSpeed's global_step*/ folder or in optimizer.pt and
    scheduler.pt; the Trainer reads only its engine's, and without DeepSpeed it silently started
    a fresh AdamW and schedule (with DeepSpeed it failed after loading everything).
    """
    by_deepspeed = any(path.is_dir() for path in folder.glob("global_step*"))
    if deepspeed and not by_deepspeed:
        raise ConfigError(
            f"--resume {folder}: saved without DeepSpeed (its optimizer state is optimizer.pt, which DeepSpeed does "
            "not read): resume it with --deepspeed none, as it was trained, or start a new run"
        )
    if not deepspeed and by_deepspeed:
        raise ConfigError(
            f"--resume {folder}: saved by DeepSpeed (its optimizer and lr schedule are in a global_step*/ folder, which "
            "only DeepSpeed reads; without it they would start over): resume it with --deepspeed as it was trained, "
            "or start a new run"
        )


def run_steps(max_steps: int, num_train_epochs: float, batches_per_epoch: int, world_size: int, accumulation: int) -> int:
    """The optimizer steps the Trainer will run: `max_steps` when > 0, else the epochs' steps as
    transformers counts them (`Trainer.set_initial_training_values`): a rank's batches an epoch
    (ceil over the ranks, as accelerate deals them out), whole accumulations plus a short last
    one, times the epochs, rounded up (1.5 epochs end inside the second)."""
    if max_steps > 0:
        return max_steps
    per_rank = math.ceil(batches_per_epoch / max(1, world_size))
    per_epoch = max(per_rank // accumulation + int(per_rank % accumulation > 0), 1)
    return math.ceil(num_train_epochs * per_epoch)


def finished_step(step: int, steps: int) -> int | None:
    """A checkpoint's `step` when it is already at (or past) the run's `steps`, else None.

    The Trainer resumed such a checkpoint by training one more step before it checked the
    limit: each restart of a finished job (`--resume auto`) took another step.
    """
    return step if step >= steps > 0 else None


def checkpoint_step(folder: Path) -> int:
    """The optimizer step a checkpoint was saved at (its trainer state's global_step; 0 if none)."""
    step = read_json_object(folder / "trainer_state.json", "the checkpoint's trainer state").get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) else 0


def publish_final_model(checkpoint: Path, output_dir: Path, replace: bool = False) -> bool:
    """Give output_dir the model of `checkpoint` as its final model, unless it has one (or also
    then, with `replace`: a final save cut short after the weights left no tokenizer files); True
    when copied. A run killed after its last checkpoint but before its final save is finished so."""
    if not replace and any((output_dir / name).is_file() for name in CHECKPOINT_WEIGHTS):
        return False
    if not any((checkpoint / name).is_file() for name in CHECKPOINT_WEIGHTS):
        # ZeRO-3 without stage3_gather_16bit_weights_on_model_save: the weights are only in
        # DeepSpeed's partitioned global_step*/ files.
        log.warning(
            "%s holds its weights only in DeepSpeed's global_step*/ folder: no final model was made from it "
            "(DeepSpeed's zero_to_fp32.py in that checkpoint converts them)", checkpoint,
        )
        return False
    output_dir.mkdir(parents=True, exist_ok=True)  # a checkpoint given by path may be another run's
    files = [p for p in checkpoint.iterdir() if p.is_file() and p.name not in _TRAINING_STATE and not p.name.startswith(("rng_state", "oasst_"))]
    # The weights last, each file under a temp name then renamed: a kill part-way leaves no
    # weights file, so the next restart copies again instead of taking a cut one for the model.
    for path in sorted(files, key=lambda p: (p.name in CHECKPOINT_WEIGHTS, p.name)):
        temp = output_dir / f".{path.name}.copying"
        shutil.copy2(path, temp)
        temp.replace(output_dir / path.name)
    return True
