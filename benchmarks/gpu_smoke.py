"""Time the trainer on a GPU: one run per call, then a comparison of the runs.

    python benchmarks/gpu_smoke.py run --shards DIR --tokenizer TOK --model pythia-410m \\
        --batching buckets --batch-tokens 16384 --steps 30 --result runs/budget.json
    python benchmarks/gpu_smoke.py compare runs/*.json

A run goes through `oasst_data.train.run.train` with the seed preset (`reference-pythia-12b`:
fp16, ZeRO-2, gradient checkpointing, gradient accumulation 2) plus a few flags for a short
run (steps, learning rate, warmup, a random-init Pythia-shaped model), so it is what
`oasst-data train` does. It measures, after `--warmup` optimizer steps: real (non-padding)
tokens/s, padded tokens/s, seconds per optimizer step, model FLOPs utilisation, peak GPU
memory, and the loss at the start and the end. Works on a CPU too (tiny model,
--deepspeed none --dtype fp32), which is how the script itself is tested.

MFU follows PaLM's model FLOPs (Chowdhery et al. 2022), the work the model needs,
not what the hardware did:

    model FLOPs = 6·N·(real tokens) + 12·L·d·Σ len²     (forward + backward)

N: the parameters less the input embedding (a lookup, no matmul; the output projection is
counted); L layers of width d; the sum runs over every trained row, len its real tokens (the
attention score and value matmuls of a row of len tokens, counted for the full len x len
square as PaLM does, not the causal half). Not counted: the forward pass that gradient
checkpointing recomputes (the seed preset's runs do it: the hardware does about 8N per token,
not 6N), padding tokens (a padded batch's extra work is waste, so padding lowers MFU), the
evaluation passes. Tokens are rank 0's (`TokenCounts` counts this rank's batches) and the peak
is one GPU's (989 TFLOP/s dense fp16/bf16 for an H100/H200): on one GPU that is the whole job.
MFU = model FLOPs / timed seconds / peak.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when the hub libraries are imported: nothing is fetched
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from transformers import TrainerCallback  # noqa: E402

PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}

# Pythia's shapes (EleutherAI/pythia-*-deduped config.json), built here: nothing is downloaded.
PYTHIA = {
    "tiny": dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2),
    "pythia-160m": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
    "pythia-410m": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24),
    "pythia-1b": dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=8, num_hidden_layers=16),
}


def write_model_config(name: str, folder: Path) -> Path:
    from transformers import GPTNeoXConfig

    GPTNeoXConfig(
        vocab_size=50304,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        initializer_range=0.02,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        **PYTHIA[name],
    ).save_pretrained(folder)
    return folder


class Timer(TrainerCallback):
    """Measures the optimizer steps after `warmup` (CUDA-synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.trainer = None
        self.marks: dict[str, tuple[float, dict, int]] = {}
        self.peak_memory: tuple[int, int] | None = None  # bytes allocated, reserved

    def _mark(self, key: str, step: int) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            if key == "end":  # training's peak, before the final evaluation and save add theirs
                self.peak_memory = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
        self.marks[key] = (time.perf_counter(), self.trainer.token_counts.totals(), step)

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._mark("begin", 0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self._mark("start", state.global_step)
        if state.global_step == state.max_steps:
            self._mark("end", state.global_step)


def run(args: argparse.Namespace) -> dict:
    import torch

    from oasst_data.train.config import resolve_config
    from oasst_data.train.run import train

    work = Path(args.work)
    model_dir = write_model_config(args.model, work / f"model-{args.model}")
    tag = args.name or f"{args.batching}-{'tokens' + str(args.batch_tokens) if args.batch_tokens else 'rows' + str(args.rows)}"
    output_dir = work / f"out-{tag}"
    if int(os.environ.get("RANK", "0") or 0) == 0:
        # A benchmark's scratch folder: a rerun on the same --work (a second try on the same GPU
        # machine) starts afresh, where `train` refuses a folder holding an earlier run.
        shutil.rmtree(output_dir, ignore_errors=True)
    flags = dict(
        shards=args.shards,
        tokenizer=args.tokenizer,
        model=str(model_dir),
        random_init=True,
        output_dir=str(output_dir),
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        eval_steps=0,
        save_steps=0,
        logging_steps=1,
        batching=args.batching,
        batch_tokens=args.batch_tokens,
        per_device_train_batch_size=args.rows,
        per_device_eval_batch_size=args.rows,
        pad_to_multiple_of=args.pad_to_multiple_of,
        deepspeed=args.deepspeed,
        dtype=args.dtype,
        seed=args.seed,
    )
    if args.gradient_checkpointing is not None:
        flags["gradient_checkpointing"] = args.gradient_checkpointing
    config = resolve_config(["reference-pythia-12b"], **flags)
    timer = Timer(args.warmup)
    outcome = train(config, callbacks=[timer], on_trainer=lambda trainer: setattr(timer, "trainer", trainer))
    trainer = outcome.trainer
    if not trainer.is_world_process_zero():
        return {}
    (t0, c0, s0), (t1, c1, s1) = timer.marks["start"], timer.marks["end"]
    seconds, steps = t1 - t0, s1 - s0
    real, padded, squares = c1["real"] - c0["real"], c1["padded"] - c0["padded"], c1["real_squared"] - c0["real_squared"]
    model = trainer.model
    unwrapped = getattr(model, "module", model)
    cfg = unwrapped.config
    n_params = sum(p.numel() for p in unwrapped.parameters())
    n_matmul = n_params - unwrapped.get_input_embeddings().weight.numel()  # the lookup is no matmul
    flops = 6 * n_matmul * real + 12 * cfg.num_hidden_layers * cfg.hidden_size * squares
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    result = {
        "name": tag,
        "device": device,
        "model": args.model,
        "parameters": n_params,
        "batching": args.batching,
        "policy": outcome.plan["policy"],
        "pad_to_multiple_of": args.pad_to_multiple_of,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "deepspeed": config.deepspeed,
        "dtype": args.dtype,
        "measured_steps": steps,
        "seconds_per_step": seconds / steps,
        "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds,
        "padding_share": 1 - real / padded,
        "rows_per_batch": outcome.plan["mean_rows_per_batch"],
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e12 / peak if peak else None,
        "peak_memory_gib": timer.peak_memory[0] / 2**30 if timer.peak_memory else None,  # training's, not the final eval's
        "peak_reserved_gib": timer.peak_memory[1] / 2**30 if timer.peak_memory else None,
        "loss_start": losses[0],
        "loss_end": losses[-1],
        "eval_loss": outcome.eval_metrics.get("eval_loss"),
        "startup_seconds": t0 - timer.marks["begin"][0],
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result), flush=True)
    return result


def compare(paths: list[str], target: float, verdict: bool = True) -> int:
    """A table of the runs (missing ones left out); with `verdict`, PASS/FAIL of the best token-budget
    run against the first random-batching run (exit code 0 or 2)."""
    results = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file() and Path(p).stat().st_size]
    if not results:
        print("no results")
        return 1
    configs = {str(r["deepspeed"]) for r in results}
    deepspeed = configs.pop() if len(configs) == 1 else "as the run's name says"
    header = f"{'run':28} {'rows/batch':>10} {'padding':>8} {'s/step':>7} {'real tok/s':>11} {'MFU':>6} {'peak GiB':>8} {'loss start→end':>16} {'eval':>6}"
    print(f"{results[0]['device']}, {results[0]['model']} ({results[0]['parameters'] / 1e6:.0f}M, random init), "
          f"{results[0]['dtype']}, DeepSpeed {deepspeed}, gradient accumulation {results[0]['gradient_accumulation_steps']}, "
          f"{results[0]['measured_steps']} timed optimizer steps each")
    print(header)
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        peak = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "n/a"
        ev = f"{r['eval_loss']:.3f}" if r.get("eval_loss") is not None else "n/a"
        print(f"{r['name']:28} {r['rows_per_batch']:>10.1f} {r['padding_share']:>8.1%} {r['seconds_per_step']:>7.3f} "
              f"{r['real_tokens_per_s']:>11,.0f} {mfu:>6} {peak:>8} {r['loss_start']:>7.3f} → {r['loss_end']:<6.3f} {ev:>6}")
    if not verdict:
        return 0
    baseline = next((r for r in results if r["batching"] == "random"), None)
    best = max((r for r in results if r["policy"].startswith("up to")), key=lambda r: r["real_tokens_per_s"], default=None)
    if baseline is None or best is None:
        return 0
    ratio = best["real_tokens_per_s"] / baseline["real_tokens_per_s"]
    verdict = "PASS" if ratio >= target else "FAIL"
    mfu = f"{best['mfu']:.1%}" if best["mfu"] is not None else "n/a"
    print(f"{verdict}: token budget ({best['name']}) reaches {ratio:.2f}x the real tokens/s of random 4-row batching "
          f"(goal >= {target}x); model FLOPs utilisation {mfu}")
    return 0 if ratio >= target else 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The deepspeed launcher puts --local_rank=N before the script's own arguments (LOCAL_RANK is in the environment).
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--shards", required=True)
    r.add_argument("--tokenizer", required=True)
    r.add_argument("--model", default="pythia-410m", choices=sorted(PYTHIA))
    r.add_argument("--batching", default="buckets", choices=["buckets", "random"])
    r.add_argument("--batch-tokens", type=int, default=None)
    r.add_argument("--rows", type=int, default=4)
    r.add_argument("--pad-to-multiple-of", type=int, default=None)
    r.add_argument("--steps", type=int, default=30)
    r.add_argument("--warmup", type=int, default=5, help="optimizer steps not timed")
    r.add_argument("--learning-rate", type=float, default=3e-4)
    r.add_argument("--warmup-steps", type=int, default=5, help="learning-rate warmup")
    r.add_argument("--deepspeed", default="zero2")
    r.add_argument("--dtype", default="fp16")
    r.add_argument("--gradient-checkpointing", type=lambda v: v.lower() in ("1", "true", "yes"), default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--name", default=None)
    r.add_argument("--work", default="/tmp/oasst-smoke")
    r.add_argument("--result", required=True)
    w = sub.add_parser("write-config", help="write a Pythia-shaped config.json (for `oasst-data train --random-init`)")
    w.add_argument("model", choices=sorted(PYTHIA))
    w.add_argument("folder", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("results", nargs="+")
    c.add_argument("--target", type=float, default=1.6)
    c.add_argument("--no-verdict", dest="verdict", action="store_false", help="only the table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.command == "run":
        if not 0 < args.warmup < args.steps:
            parser.error("--warmup must be at least 1 and below --steps")
        run(args)
    elif args.command == "write-config":
        print(write_model_config(args.model, args.folder))
    else:
        sys.exit(compare(args.results, args.target, args.verdict))


if __name__ == "__main__":
    main()
