"""`train(config)`: shards + tokenizer check + model + BucketTrainer, composed; what the CLI calls."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, OasstDataError
from ..shards.hashing import shards_digest
from ..shards.load import load_manifest
from .checkpoints import (
    CHECKPOINT_WEIGHTS,
    PREFIX_CHECKPOINT,
    check_same_engine,
    checkpoint_step,
    finished_step,
    publish_final_model,
    resume_checkpoint,
    run_steps,
)
from .config import TrainConfig, read_json_object
from .ranks import on_every_rank

log = logging.getLogger("oasst_data.train")

# Rows of random batching the plan's padding is compared with (the seed's batch).
REFERENCE_ROWS = 4


@dataclass
class TrainOutcome:
    output_dir: Path
    train_metrics: dict[str, Any]
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    trainer: Any = None
    already_finished_at: int | None = None  # the step of a restarted run that had nothing left to train
    resumed_at: int | None = None  # the checkpoint's step a resumed run started from (its metrics cover the steps after)


def packaged_deepspeed_config(name: str = "zero2") -> Path:
    return Path(str(resources.files("oasst_data.train") / "configs" / f"{name}.json"))


def deepspeed_config(value: str | None, cuda: bool, dtype: str) -> str | None:
    """Path of the DeepSpeed JSON ('zero2' = the packaged seed config); checks DeepSpeed can run
    and prepares this process for it."""
    if value is None:
        return None
    path = packaged_deepspeed_config() if value == "zero2" else Path(value)
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config {value!r}: no such file (use 'zero2' for the shipped ZeRO-2 config)")
    loaded = read_json_object(path, "a DeepSpeed config")
    zero = loaded.get("zero_optimization", {})
    stage = zero.get("stage", 0) if isinstance(zero, dict) else None
    if stage not in (0, 1, 2, 3, "auto") or isinstance(stage, bool):
        raise ConfigError(f"DeepSpeed config {path}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    if not deepspeed_installed():
        raise ConfigError(
            "DeepSpeed is not installed: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed "
            "(a source package, built against the installed torch), or pass --deepspeed none"
        )
    if not cuda and dtype != "fp32":
        raise ConfigError(f"DeepSpeed without a GPU trains in fp32 only (transformers refuses {dtype} there): pass --dtype fp32")
    if not any(key in os.environ for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        # A single process started without a launcher: give torch.distributed a one-rank world.
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    if not cuda:
        log.warning(
            "DeepSpeed without a GPU: its CPU accelerator over gloo (slow; for rehearsing a launch). "
            "The first run compiles DeepSpeed's CPU Adam with the C++ compiler."
        )
        _configure_cpu_deepspeed_state()
    warn_about_stale_build_locks()
    return str(path)


# Older than any JIT build takes here (CPU Adam: about a minute).
STALE_LOCK_AGE_S = 600.0


def warn_about_stale_build_locks(root: Path | None = None, older_than_s: float = STALE_LOCK_AGE_S) -> list[Path]:
    """Name the old `lock` files in torch's extension build folder, where DeepSpeed JIT-compiles ops.

    torch's build waits for as long as such a file exists, silently; a build killed midway leaves
    one behind, and every later run then hangs before its first step."""
    if root is None:
        preset = os.environ.get("TORCH_EXTENSIONS_DIR")
        if preset:
            root = Path(preset)
        else:
            from torch.utils.cpp_extension import get_default_build_root

            root = Path(get_default_build_root())
    now = time.time()
    stale = []
    for pattern in ("*/lock", "*/*/lock"):  # ROOT/op/lock with TORCH_EXTENSIONS_DIR, else ROOT/py311_cpu/op/lock
        for lock in sorted(root.glob(pattern)):
            try:
                age = now - lock.stat().st_mtime
            except OSError:  # the build finished meanwhile
                continue
            if age > older_than_s:
                stale.append(lock)
                log.warning(
                    "%s is %.0f minutes old: the build of DeepSpeed's %s op waits while it exists, forever if the build "
                    "that made it was killed. Delete it when no other build is running.",
                    lock, age / 60, lock.parent.name,
                )
    return stale


def _configure_cpu_deepspeed_state() -> None:
    """Set up accelerate's process state for DeepSpeed on CPUs, before TrainingArguments.

    Left to TrainingArguments, accelerate finds no CUDA backend and reports a one-process world
    to the Trainer while DeepSpeed itself sees every rank, so the "auto" train_batch_size is
    wrong and DeepSpeed refuses it. Naming gloo here gives both the same world; the Trainer then
    uses this state (`use_configured_state`).
    """
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)  # what TrainingArguments does first, too
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # how TrainingArguments itself asks for DeepSpeed
    try:
        try:
            PartialState(backend="gloo")
        finally:
            del os.environ["ACCELERATE_USE_DEEPSPEED"]
        remove_shm_allreduce_buffer()
    except BaseException:
        # A SIGTERM (or an error) between the buffer's creation and the unlink after the barrier
        # left 66 MB per rank in /dev/shm (an audit): this run maps no buffer again.
        with contextlib.suppress(OSError):
            shm_allreduce_buffer().unlink()
        raise


def shm_allreduce_buffer() -> Path:
    """This rank's DeepSpeed CPU all-reduce buffer in /dev/shm (the name its shm.cpp gives it)."""
    env = os.environ
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{env.get('MASTER_ADDR', '')}_{env.get('MASTER_PORT', '')}_{env.get('RANK', '0')}"
    return Path("/dev/shm") / name


def remove_shm_allreduce_buffer() -> bool:
    """Unlink this rank's all-reduce buffer once every rank has mapped every other's.

    On CPUs under its launcher (LOCAL_SIZE = world size), DeepSpeed's init creates a 66 MB
    shared-memory file per rank and never unlinks it: each run left its files in /dev/shm, which
    is memory (18 GB after a day of test runs here, then the OOM killer). Each rank maps the
    others' files during that init; after the barrier no rank opens one again, and a mapping
    outlives its name. Returns whether a file was removed.
    """
    import torch.distributed as dist

    # DeepSpeed's own test, the same on every rank (so is the barrier): no LOCAL_SIZE (no launcher)
    # or ranks on several machines mean no buffer.
    local_size = os.environ.get("LOCAL_SIZE")
    if local_size is None or local_size != os.environ.get("WORLD_SIZE", "1"):
        return False
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    buffer = shm_allreduce_buffer()
    try:
        buffer.unlink()
    except FileNotFoundError:
        return False
    return True


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The package each --report-to target needs (transformers raises a bare RuntimeError at startup).
REPORT_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_report_targets(targets: list[str]) -> None:
    for target in targets:
        packages = REPORT_PACKAGES.get(target, ())
        if packages and not any(importlib.util.find_spec(package) for package in packages):
            raise ConfigError(f"--report-to {target} needs the {packages[0]} package: pip install {packages[0]}")


RUN_RECORD = "oasst_train.json"


LOCK_FILE = ".oasst_train.lock"


def lock_output_dir(out: Path):
    """Hold the output folder for this run (rank 0, until training ends): a second job there, such
    as a restart while the first one's ranks still run, would train into the same checkpoints.

    DeepSpeed's single-node launcher does not pass SIGTERM on to its ranks, so `timeout` or
    `kill` on it leaves them training; their restart used to go ahead beside them. An flock is
    let go by the system when its process ends, however it ends. Returns the open lock file.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return None
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"--output-dir {out}: another run is training there ({holder}); wait for it, or stop it first "
            "(DeepSpeed's launcher does not pass a SIGTERM on: signal its ranks, or use torchrun)"
        ) from None
    except OSError as error:  # ENOLCK, ENOSYS: a filesystem without locks (NFS without its lock service)
        handle.close()
        raise OasstDataError(
            f"--output-dir {out}: cannot lock {LOCK_FILE} there ({error.strerror or error}): a filesystem without "
            "file locks? The package's atomic writes need them too: give a folder on a local disk or an NFS mount with locking"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def check_output_dir(cfg: TrainConfig) -> None:
    """Refuse an output folder that would overwrite an input: the model's or the tokenizer's folder
    (the final save writes config.json, weights and tokenizer files there), or the build or a
    folder inside it (a rebuild with --overwrite would delete the model and its checkpoints); and,
    unless resuming, one holding an earlier run's checkpoints or final model."""
    out = Path(os.path.realpath(cfg.output_dir))
    shards = Path(os.path.realpath(cfg.shards))
    if out == shards or shards in out.parents:
        raise ConfigError(f"--output-dir {cfg.output_dir}: lies in the build {cfg.shards}; write the model elsewhere")
    for option, value in (("--model", cfg.model), ("--tokenizer", cfg.tokenizer)):
        if value and Path(value).is_dir() and out == Path(os.path.realpath(value)):
            raise ConfigError(f"--output-dir {cfg.output_dir}: is the {option} folder; the final save would overwrite it")
    if cfg.resume not in (None, "auto") or not out.is_dir():
        return
    # A fresh run there would mix its checkpoints with the earlier run's, and a later
    # `--resume last` would take whichever has the highest step.
    checkpoints = sorted(path.name for path in out.iterdir() if path.name.startswith(PREFIX_CHECKPOINT) and path.is_dir())
    if checkpoints:
        if cfg.resume == "auto":
            return  # resumed from the newest
        shown = ", ".join(checkpoints[:3]) + (", ..." if len(checkpoints) > 3 else "")
        raise ConfigError(
            f"--output-dir {cfg.output_dir}: holds checkpoints of an earlier run ({shown}); "
            "--resume last (or auto) continues it, or give a new folder to start over"
        )
    final = [name for name in CHECKPOINT_WEIGHTS if (out / name).is_file()]
    if final and cfg.resume == "auto" and finished_without_checkpoints(cfg) is not None:
        return  # the same run, finished: train() says so and trains nothing
    if final and cfg.resume == "auto" and final_save_cut_short(cfg):
        log.warning("%s: the final save of this run did not finish and there is no checkpoint: training again", cfg.output_dir)
        return
    if final:
        raise ConfigError(
            f"--output-dir {cfg.output_dir}: holds the final model of an earlier run ({final[0]}); "
            "give a new folder, or move that one away to train here again"
        )
    # Only a run record (a run stopped before it saved anything): nothing to mix, so it starts over.


def finished_without_checkpoints(cfg: TrainConfig) -> int | None:
    """The last step of a run in --output-dir that finished (its final model saved whole) with
    the same configuration and left no checkpoint (`--save-steps 0`), else None: a scheduler's
    restart of `--resume auto` then has nothing to train, as after a run that left checkpoints."""
    record = _same_run_without_checkpoints(cfg)
    finished = record.get("finished") if record is not None else None
    if not isinstance(finished, dict) or not isinstance(finished.get("global_step"), int):
        return None
    return finished["global_step"]


def final_save_cut_short(cfg: TrainConfig) -> bool:
    """Whether --output-dir holds this same run's final model from a save that did not finish (a
    signal during it) and no checkpoint: nothing to resume from, so the run starts again there."""
    record = _same_run_without_checkpoints(cfg)
    return record is not None and "finished" not in record


def _same_run_without_checkpoints(cfg: TrainConfig) -> dict | None:
    """The run record in --output-dir when it is of this same run (settings and shards) and the
    folder holds no checkpoint; else None."""
    out = Path(cfg.output_dir)
    if any(path.name.startswith(PREFIX_CHECKPOINT) for path in out.iterdir()):
        return None
    try:
        record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    # The same run whatever --resume said; dtype is recorded resolved ('auto' -> fp32).
    ignored = ("dtype", "resume")
    recorded = {key: value for key, value in record.get("config", {}).items() if key not in ignored}
    current = {key: value for key, value in _as_recorded(cfg.to_dict()).items() if key not in ignored}
    if recorded != current:
        return None
    # ... on the same shards: a build rebuilt in place from other data has the same path.
    try:
        same_data = record.get("shards", {}).get("data_sha256") == shards_digest(load_manifest(cfg.shards))
    except (OasstDataError, KeyError, TypeError):
        return None  # opening the shards reports the problem, then
    return record if same_data else None


def _as_recorded(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_context(cfg: TrainConfig, model_config, splits: list) -> None:
    """Refuse rows (or a max_length) longer than the model's declared context, before any work.

    Past it a model with learned positions (GPT-2, OPT) stops mid-run with "IndexError: index
    out of range in self"; a rotary one (GPT-NeoX, Llama) runs on positions it never saw.
    Padding counts: a batch is as wide as its longest row rounded up to pad_to_multiple_of.
    """
    from .model import context_length
    from .sampler import round_up

    found = context_length(model_config)
    if found is None:
        log.debug("%s declares no context length: row lengths not checked against it", cfg.model)
        return
    context, field_name = found
    pad = cfg.pad_to_multiple_of if cfg.pad_to_multiple_of and cfg.pad_to_multiple_of > 1 else None
    fits = context - context % pad if pad else context  # the longest row that still fits once padded
    where = f"the context of {cfg.model} ({field_name} {context:,})"
    if cfg.max_length is not None and cfg.max_length > context:
        raise ConfigError(f"max_length {cfg.max_length:,} is beyond {where}: pass --max-length {context} or less")
    for rows in splits:
        if rows is None or not len(rows):
            continue
        longest = int(rows.lengths.max())
        if longest > context:
            raise ConfigError(
                f"{cfg.shards}: the longest {rows.name} row has {longest:,} tokens, more than {where}; "
                f"rebuild with `oasst-data build --max-length {fits}` (the trainer does not truncate)"
            )
        if round_up(longest, pad) > context:
            rebuild = f", or rebuild with `oasst-data build --max-length {fits}`" if fits >= 8 else ""  # 8: build's least
            raise ConfigError(
                f"--pad-to-multiple-of {pad} pads the longest {rows.name} row ({longest:,} tokens) to "
                f"{round_up(longest, pad):,}, beyond {where}: pad to a multiple that divides {context}{rebuild}"
            )


def check_one_device_per_process(devices: int) -> None:
    """Refuse one process driving several GPUs: the Trainer would wrap the model in
    nn.DataParallel and split each batch across them, so --per-device-batch-size and
    --batch-tokens would mean the whole batch, and the GPUs would wait on one Python process."""
    if devices > 1:
        raise ConfigError(
            f"this process sees {devices} GPUs: launch one process per GPU (deepspeed --num_gpus {devices} "
            f"--no_local_rank --module oasst_data_cli train ..., or torchrun --nproc_per_node {devices}), "
            "or pick one GPU with CUDA_VISIBLE_DEVICES"
        )


def check_world_size(trainer_world_size: int) -> None:
    """Refuse a launch of several processes that the Trainer sees as one.

    torchrun on CPUs without DeepSpeed: accelerate finds no GPU backend and gives every process a
    world of one, so each would train the whole run alone as rank 0 and write the same output_dir.
    """
    try:
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment is not a number") from None
    if launched > 1 and trainer_world_size == 1:
        raise ConfigError(
            f"WORLD_SIZE={launched}: the launcher started {launched} processes but the Trainer sees a world of one "
            "(no GPU backend), so each would train alone and write the same output directory; on CPUs use DeepSpeed "
            "(--deepspeed zero2 --dtype fp32), on GPUs DeepSpeed or plain DDP, or start one process"
        )


def plan_summary(rows, policy, seed: int, batching: str) -> dict[str, Any]:
    """Batches and padding of epoch 0, against random batching of REFERENCE_ROWS rows."""
    from .sampler import FixedRows, padding_share
    from .trainer import make_sampler

    sampler = make_sampler(rows, policy, seed, True, batching)
    plan = sampler.epoch_plan(0)
    reference = make_sampler(rows, FixedRows(REFERENCE_ROWS), seed, True, "random").epoch_plan(0)
    pad = getattr(policy, "pad_to_multiple_of", None)
    return {
        "batches_per_epoch": len(plan),
        "buckets": len(sampler.bucket_ids),
        "policy": policy.describe(),
        "padding_share": padding_share(plan, rows.lengths, pad),
        "random_padding_share": padding_share(reference, rows.lengths),
        "mean_rows_per_batch": len(rows) / max(1, len(plan)),
    }


def train(cfg: TrainConfig, callbacks: list | tuple = (), on_trainer: Callable[[Any], None] | None = None) -> TrainOutcome:
    """Train as configured; `callbacks` are extra TrainerCallbacks, `on_trainer` sees the trainer before training."""
    with _closing_process_group():
        return _train(cfg, callbacks, on_trainer)


@contextmanager
def _closing_process_group() -> Iterator[None]:
    """Close the torch.distributed world that training opened (DeepSpeed and accelerate open one
    and leave it open). Left open, a rank of a finished run could abort in interpreter teardown
    ("terminate called without an active exception", seen with 2 ranks on gloo), failing the launch."""
    import torch.distributed as dist

    opened_before = dist.is_available() and dist.is_initialized()
    finished = False
    try:
        yield
        finished = True
    finally:
        if not opened_before and dist.is_available() and dist.is_initialized():
            if finished:
                dist.barrier()  # no rank leaves while another still saves or evaluates
            dist.destroy_process_group()


def _train(cfg: TrainConfig, callbacks, on_trainer) -> TrainOutcome:
    import torch

    from .collator import PadCollator
    from .model import load_config, resolve_dtype
    from .trainer import BucketTrainer, RichLogCallback, batch_policies, training_arguments

    _quiet_accelerate()
    if _rank() > 0:
        # One console log per job, from rank 0; the first rank of each other machine keeps its
        # warnings too (what only its node shows: a stale build lock, a node-local shard copy).
        local_first = int(os.environ.get("LOCAL_RANK", "0") or 0) == 0
        logging.getLogger("oasst_data").setLevel(logging.WARNING if local_first else logging.ERROR)
    if not cfg.shards:
        raise ConfigError("give --shards DIR (the output of `oasst-data build`)")
    if not cfg.output_dir:
        raise ConfigError("give --output-dir DIR")
    check_output_dir(cfg)
    check_report_targets(cfg.report_to)
    cuda = torch.cuda.is_available()
    dtype = resolve_dtype(cfg.dtype)
    ds_path = deepspeed_config(cfg.deepspeed, cuda, dtype)
    # Each decision a rank takes from what it reads is agreed on by all (`on_every_rank`): a rank
    # that went its own way (returned early, resumed another checkpoint) left the others waiting
    # for it forever. No-ops where the process group comes later (CUDA: in TrainingArguments).
    resume, finished_at = _checkpoint_to_resume(cfg, ds_path is not None)
    if finished_at is not None:
        log.info("%s: this run finished at step %d (its final model is there): nothing left to train", cfg.output_dir, finished_at)
        return TrainOutcome(Path(cfg.output_dir), {}, {}, already_finished_at=finished_at)
    with on_every_rank("opening the shards"):
        tokenizer, build, validation = _open_shards(cfg)
        check_context(cfg, load_config(cfg.model), [build.train, validation])

    # TrainingArguments first: it sets up the (DeepSpeed) distributed state the model load may need.
    args = training_arguments(cfg, dtype, validation is not None, ds_path, use_configured_state=bool(ds_path) and not cuda)
    check_world_size(args.world_size)
    check_one_device_per_process(args.n_gpu)
    train_policy, eval_policy = batch_policies(cfg)
    plan = plan_summary(build.train, train_policy, cfg.seed, cfg.batching)
    resumed_at, done, steps = _resume_point(cfg, resume, build.train, train_policy, args, plan)
    if done is not None:
        return _already_finished(cfg, Path(resume), done, steps)
    if resume is not None:
        log.info("resuming %s at step %d", resume, resumed_at)
    # Every check so far writes nothing; the Trainer (below) makes the output directory.
    with on_every_rank("taking the output folder"):
        lock = lock_output_dir(Path(cfg.output_dir)) if _rank() == 0 else None
    try:
        _log_plan(cfg, plan)
        warn_about_short_epochs(plan["batches_per_epoch"], args.world_size, args.gradient_accumulation_steps)
        warn_about_rows_over_budget(build.train, train_policy, "--batch-tokens")
        if validation is not None:
            warn_about_rows_over_budget(validation, eval_policy, "--eval-batch-tokens")
        hint = bucket_tuning_hint(build.manifest.get("config", {}), cfg.batch_tokens) if cfg.batching == "buckets" else None
        if hint:
            log.info(hint)
        model = _load_model(cfg, tokenizer, dtype, ds_path)

        with _tensorboard_run_folder(cfg):  # its callback reads the folder when the Trainer is made
            trainer = BucketTrainer(
                model=model,
                args=args,
                train_dataset=build.train,
                eval_dataset=validation,
                data_collator=PadCollator(tokenizer.pad_token_id, cfg.pad_to_multiple_of),
                processing_class=tokenizer.tokenizer,
                callbacks=[RichLogCallback(), *callbacks],
                train_policy=train_policy,
                eval_policy=eval_policy,
                batching=cfg.batching,
            )
        if not trainer.model_accepts_loss_kwargs:
            log.warning("%s does not take num_items_in_batch: its loss is a mean per batch, not per trained token", cfg.model)
        if on_trainer is not None:
            on_trainer(trainer)
        if trainer.is_world_process_zero():
            _write_run_record(cfg, build.manifest, plan, dtype)

        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        if trainer.is_world_process_zero():
            _mark_finished(cfg, trainer.state.global_step)
        eval_metrics = _final_eval(trainer) if validation is not None else {}
        return TrainOutcome(Path(cfg.output_dir), dict(result.metrics), dict(eval_metrics), plan, trainer, resumed_at=resumed_at)
    finally:
        if lock is not None:
            # Emptied, so the final model folder does not carry a host name (`hf upload OUT`).
            with contextlib.suppress(OSError):
                lock.truncate(0)
            lock.close()  # another job may take the folder now



def _checkpoint_to_resume(cfg: TrainConfig, deepspeed: bool) -> tuple[str | None, int | None]:
    """The checkpoint to resume (None: start afresh), or the step at which a run that left no
    checkpoint finished; the same on every rank."""
    with on_every_rank("choosing the checkpoint to resume") as agreed:
        resume = resume_checkpoint(cfg.resume, cfg.output_dir)
        finished_at = None
        if resume is not None:
            check_same_engine(Path(resume), deepspeed)
        elif cfg.resume == "auto" and Path(cfg.output_dir).is_dir():
            finished_at = finished_without_checkpoints(cfg)
        agreed.value = (resume, finished_at)
    return resume, finished_at


def _resume_point(cfg: TrainConfig, resume: str | None, train_rows, train_policy, args, plan: dict) -> tuple[int | None, int | None, int | None]:
    """(the resumed checkpoint's step, its step if the run is already at its end, the run's steps),
    after checking the checkpoint's batch plan; the same on every rank. Nones without `resume`."""
    from .trainer import batch_plan, check_resume_plan

    with on_every_rank("checking the checkpoint to resume") as agreed:
        resumed_at = done = steps = None
        if resume is not None:
            # The Trainer resumes by skipping the batches already trained: right only on the same plan.
            accumulation = args.gradient_accumulation_steps
            check_resume_plan(resume, batch_plan(train_rows, train_policy, args.seed, cfg.batching, args.world_size, accumulation))
            resumed_at = checkpoint_step(Path(resume))
            steps = run_steps(cfg.max_steps, cfg.num_train_epochs, plan["batches_per_epoch"], args.world_size, accumulation)
            done = finished_step(resumed_at, steps)  # the trainer state read once
        agreed.value = (resume, resumed_at, done)
    return resumed_at, done, steps

def _already_finished(cfg: TrainConfig, checkpoint: Path, step: int, steps: int) -> TrainOutcome:
    """A restart of a run whose checkpoint is at its last step: nothing to train (the Trainer
    would take one more step); its final model is the checkpoint's if it has none yet."""
    copied = False
    if int(os.environ.get("RANK", "0") or 0) == 0:
        # Only a final save that finished (the run record says so) is kept: one a signal cut after
        # the weights had no tokenizer files (found by a review), and is replaced by the checkpoint's.
        copied = publish_final_model(checkpoint, Path(cfg.output_dir), replace=not _recorded_finish(cfg))
        if copied and (Path(cfg.output_dir) / RUN_RECORD).is_file():
            _mark_finished(cfg, step)
    log.info(
        "%s is at step %d of the run's %d: nothing left to train%s", checkpoint, step, steps,
        f"; its model is now the final model in {cfg.output_dir}" if copied else "",
    )
    return TrainOutcome(Path(cfg.output_dir), {}, {}, already_finished_at=step)


@contextmanager
def _tensorboard_run_folder(cfg: TrainConfig) -> Iterator[None]:
    """TensorBoard logs under OUT/runs/RUN_NAME with --run-name: transformers' callback takes its
    folder from TENSORBOARD_LOGGING_DIR only (else runs/<date>_<host>), never from run_name. A
    folder the user set in that variable wins."""
    if not cfg.run_name or "tensorboard" not in cfg.report_to or "TENSORBOARD_LOGGING_DIR" in os.environ:
        yield
        return
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(cfg.output_dir) / "runs" / cfg.run_name)
    try:
        yield
    finally:
        del os.environ["TENSORBOARD_LOGGING_DIR"]


def _quiet_accelerate() -> None:
    """Keep accelerate's notes that tell a user of this trainer nothing out of the console."""
    accelerate_log = logging.getLogger("accelerate.accelerator")
    # Variable-size batches have no fixed remainder to trim; accelerate says so at every evaluation.
    accelerate_log.setLevel(logging.WARNING)
    accelerate_log.addFilter(_not_the_accumulation_mismatch)


def _not_the_accumulation_mismatch(record: logging.LogRecord) -> bool:
    # Under DeepSpeed, transformers gives accelerate 1 accumulation step on purpose (the Trainer
    # accumulates itself) and DeepSpeed the real count; accelerate warns at every launch and takes
    # DeepSpeed's. The step is right: tests/train/test_deepspeed_cpu.py checks its gradient.
    return "Gradient accumulation steps mismatch" not in record.getMessage()


def _open_shards(cfg: TrainConfig):
    """(tokenizer, build, validation rows or None): the build opened against the tokenizer's fingerprint."""
    from ..shards.load import load_manifest
    from ..tokenizer import TokenizerUnavailableError, load_tokenizer
    from ..shards.verify import verify_saved_tokenizer
    from .shards import ShardsError, describe, open_build

    manifest = load_manifest(cfg.shards)
    recorded = manifest.get("tokenizer", {})
    saved = Path(cfg.shards) / recorded["saved"]["folder"] if recorded.get("saved") else None
    if cfg.tokenizer:
        tokenizer_name = cfg.tokenizer
    elif saved is not None and saved.is_dir():
        tokenizer_name = str(saved)  # saved by the build beside its shards
    else:
        tokenizer_name = recorded.get("name")
    if not tokenizer_name:
        raise ConfigError(f"{cfg.shards}: the manifest names no tokenizer; pass --tokenizer")
    if cfg.verify_checksums and saved is not None and tokenizer_name == str(saved):
        # The saved tokenizer's files before it is loaded; the shards after its fingerprint is
        # checked (a wrong --tokenizer is named before the whole build is hashed).
        damage = verify_saved_tokenizer(cfg.shards, manifest).damage()
        if damage:
            raise ShardsError(f"{cfg.shards}: the saved tokenizer does not match the manifest ({damage}); rebuild, or run `oasst-data verify`")
    try:
        tokenizer = load_tokenizer(tokenizer_name)
    except TokenizerUnavailableError as error:
        if cfg.tokenizer:
            raise
        # Its own advice names --tokenizer already; say why the build's own copy was not used.
        gone = f"the build's saved tokenizer ({saved}) is missing, and " if saved is not None else ""
        raise OasstDataError(
            f"{cfg.shards}: {gone}the tokenizer its manifest names, {tokenizer_name!r}, cannot be loaded; "
            f"pass the tokenizer the build used with --tokenizer NAME_OR_PATH ({str(error).split(' -- ')[0]})"
        ) from None
    build = open_build(
        cfg.shards,
        tokenizer.fingerprint,
        tokenizer_name,
        vocab_size=len(tokenizer.tokenizer),
        max_length=cfg.max_length,
        verify_checksums=cfg.verify_checksums,
        eos_token_id=tokenizer.eos_token_id,
    )
    validation = build.validation if build.validation is not None and len(build.validation) else None
    log.info("shards %s: train %s; validation %s", cfg.shards, describe(build.train), describe(validation) if validation else "none")
    return tokenizer, build, validation


def bucket_tuning_hint(build_config: dict, batch_tokens: int | None) -> str | None:
    """A hint when token-budget batches meet automatic buckets tuned for another batch shape."""
    if not batch_tokens or build_config.get("buckets"):
        return None
    tuned_for = build_config.get("bucket_batch_tokens")
    if tuned_for == batch_tokens:
        return None
    shape = f"{tuned_for:,}-token batches" if tuned_for else f"{build_config.get('bucket_batch_size', 4)}-row batches"
    return (
        f"these shards' buckets were tuned for {shape}; for --batch-tokens {batch_tokens} a build with "
        f"--bucket-batch-tokens {batch_tokens} pads less"
    )


def warn_about_short_epochs(batches_per_epoch: int, world_size: int, accumulation: int) -> bool:
    """Warn when a rank's epoch holds fewer batches than one optimizer step accumulates: every
    step then ends at the epoch's end, with fewer batches (a smaller effective batch) than set."""
    per_rank = math.ceil(batches_per_epoch / max(1, world_size))
    if not batches_per_epoch or per_rank >= accumulation:
        return False
    log.warning(
        "each of the %d rank(s) gets %d batch(es) an epoch, fewer than --gradient-accumulation-steps %d: "
        "every optimizer step will accumulate %d, not %d; lower the accumulation or the batch size",
        world_size, per_rank, accumulation, per_rank, accumulation,
    )
    return True


def warn_about_rows_over_budget(rows, policy, option: str) -> None:
    """A row wider than the token budget (padding included) comes alone, in a batch wider than the
    budget: the memory a user sized by the budget must hold that batch (found by an audit: 293 of
    488 batches past a 256-token budget, without a word)."""
    from .sampler import TokenBudget

    if not isinstance(policy, TokenBudget) or not len(rows):
        return
    pad = policy.pad_to_multiple_of if policy.pad_to_multiple_of and policy.pad_to_multiple_of > 1 else 1
    widths = -(-rows.lengths // pad) * pad
    over = int((widths > policy.tokens).sum())
    if over:
        log.warning(
            "%s: %d %s row(s) are wider than %s %d%s: each comes alone, in a batch of up to %d tokens; "
            "memory must hold that (rebuild with a smaller --max-length, or raise the budget)",
            rows.name, over, rows.name, option, policy.tokens, f" once padded to a multiple of {pad}" if pad > 1 else "",
            int(widths.max()),
        )


def _log_plan(cfg: TrainConfig, plan: dict[str, Any]) -> None:
    log.info(
        "batches: %s, %s in %d bucket(s), %d per epoch (%.1f rows on average); padding %.1f%% "
        "(random batches of %d rows: %.1f%%)",
        cfg.batching,
        plan["policy"],
        plan["buckets"],
        plan["batches_per_epoch"],
        plan["mean_rows_per_batch"],
        100 * plan["padding_share"],
        REFERENCE_ROWS,
        100 * plan["random_padding_share"],
    )


def _load_model(cfg: TrainConfig, tokenizer, dtype: str, ds_path: str | None):
    from transformers import set_seed

    from .model import choose_attention, load_model

    set_seed(cfg.seed)
    # DeepSpeed keeps fp32 master weights itself: load in the training dtype there; plain
    # Trainer mixed precision needs fp32 weights.
    loaded = load_model(
        cfg.model,
        vocab_size=len(tokenizer.tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype=dtype if ds_path else "fp32",
        attn_implementation=choose_attention(cfg.attn_implementation, dtype),
        residual_dropout=cfg.residual_dropout,
        random_init=cfg.random_init,
        seed=cfg.seed,
    )
    log.info(
        "model %s%s: %.1fM parameters, attention %s, %s%s",
        cfg.model,
        " (random init)" if cfg.random_init else "",
        loaded.parameters / 1e6,
        loaded.attn_implementation,
        dtype,
        f", DeepSpeed {Path(ds_path).name}" if ds_path else "",
    )
    return loaded.model


def _final_eval(trainer) -> dict[str, Any]:
    """The validation loss after training; reused when the last step was just evaluated."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == trainer.state.global_step:
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return trainer.evaluate()


def _write_run_record(cfg: TrainConfig, manifest: dict, plan: dict, dtype: str) -> None:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "config": cfg.to_dict() | {"dtype": dtype},
        "shards": {
            "path": str(cfg.shards),
            "config_hash": manifest.get("config_hash"),
            "tokenizer_fingerprint": manifest["tokenizer"].get("fingerprint"),
            "data_sha256": shards_digest(manifest),
        },
        "plan": plan,
    }
    atomic_write_bytes(out / RUN_RECORD, (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8"))


def _recorded_finish(cfg: TrainConfig) -> bool:
    try:
        record = json.loads((Path(cfg.output_dir) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("finished"), dict)


def _mark_finished(cfg: TrainConfig, global_step: int) -> None:
    """Record, once the final model is saved whole, that the run finished (and at which step)."""
    path = Path(cfg.output_dir) / RUN_RECORD
    record = json.loads(path.read_text(encoding="utf-8"))
    record["finished"] = {"global_step": global_step}
    atomic_write_bytes(path, (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8"))
