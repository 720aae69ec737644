#!/usr/bin/env bash
# DeepSpeed ZeRO-2 smoke benchmark of `oasst-data train` on one CUDA GPU; nothing is fetched.
#
# 1. Where PyPI is reachable, in the repository root:  bash benchmarks/gpu_prepare.sh  (fills .whl/)
# 2. On the GPU machine, in the repository root, with .whl/ beside it:  bash benchmarks/gpu_smoke.sh
#    (this project's device tool: command "bash benchmarks/gpu_smoke.sh", carry [".whl"], timeout ~590 s)
#
# It installs the carried wheels (when the carried transformers does not import on the image,
# its tokenizers or huggingface-hub being too old, it says so and uses the image's transformers,
# as SMOKE_SYSTEM_TRANSFORMERS=1 does), builds the project fixtures with the real Pythia tokenizer
# through `oasst-data build`, expands that build into SYNTHETIC shards whose row lengths follow
# the real en_100 distribution (benchmarks/synth_shards.py), then trains a random-init
# Pythia-shaped model with the seed preset (fp16, ZeRO-2, gradient checkpointing, accumulation 2)
# through the deepspeed launcher, three times for the same number of steps:
#   budget    length buckets tuned for the budget, a token budget per batch (SMOKE_BATCH_TOKENS, padded to 8)
#   random4   random batches of 4 rows (the seed's batching)
#   buckets4  length buckets, 4 rows per batch
# and prints real tokens/s, model FLOPs utilisation, peak GPU memory, loss at start and end,
# and whether the token budget reaches >= 1.6x the real tokens/s of random4. Then, unless
# SMOKE_CLI=0, it runs `oasst-data train` itself (no launcher, seed preset, DeepSpeed) for a
# few steps, saves a checkpoint and resumes from it. Last, unless SMOKE_EXTRAS=0 and while
# under SMOKE_EXTRAS_DEADLINE seconds (420), budget and random4 again without DeepSpeed.
# Results: $OUT (or /tmp/oasst-smoke/out).
#
# SMOKE_DRY_RUN=1 rehearses the script on a CPU (active venv, no wheels, a tiny model, fp32, few
# steps; DeepSpeed ZeRO-2 on its CPU accelerator under the launcher when deepspeed is installed,
# else plain PyTorch): it checks the plumbing, not the GPU numbers.
set -uo pipefail
cd "$(dirname "$0")/.."

MODEL=${SMOKE_MODEL:-pythia-410m}
STEPS=${SMOKE_STEPS:-30}
WARMUP=${SMOKE_WARMUP:-5}
TOKENS=${SMOKE_BATCH_TOKENS:-16384}
ROWS=${SMOKE_ROWS:-6000}
WORK=${SMOKE_WORK:-/tmp/oasst-smoke}
VAL_ROWS=${SMOKE_VAL_ROWS:-200}
PORT=${SMOKE_MASTER_PORT:-29511}
RESULTS=${OUT:-$WORK/out}
TOKENIZER=.whl/tokenizer-gpt-neox-20b
DRY=${SMOKE_DRY_RUN:-0}
# The device call is cut at ~590 s: no step starts a timeout that would run past END seconds
# (the JIT build, three runs and two CLI runs at their own limits sum to ~1,300 s).
END=${SMOKE_END:-560}
LAUNCH=(python3 -m deepspeed.launcher.runner --num_gpus 1 --master_port "$PORT")
EXTRA=()
if [ "$DRY" = 1 ]; then
    MODEL=tiny STEPS=${SMOKE_STEPS:-4} WARMUP=${SMOKE_WARMUP:-1} ROWS=${SMOKE_ROWS:-1500}
    # fp32 logits of 16,384 tokens x 50k vocabulary on a CPU: ~11 GB resident (4,096: ~6 GB)
    TOKENS=${SMOKE_BATCH_TOKENS:-4096} END=${SMOKE_END:-100000}
    EXTRA=(--dtype fp32)
    if ! python3 -c "import deepspeed" > /dev/null 2>&1; then LAUNCH=(python3) EXTRA+=(--deepspeed none); fi
    [ -d "$TOKENIZER" ] || TOKENIZER=${SMOKE_TOKENIZER:-../shared/tokenizers/gpt-neox-20b}
    [ -d "$TOKENIZER" ] || TOKENIZER=fixtures/tokenizer   # a fresh clone: the plumbing, not the real vocabulary
fi
# Every log under $RESULTS: only $OUT comes back from the device call, also when it is cut off.
LOGS=$RESULTS/logs
mkdir -p "$WORK" "$RESULTS" "$LOGS"
exec > >(tee -a "$RESULTS/smoke.log") 2>&1
log() { echo "[$(date +%T)] $*"; }
# A step's time limit: its own, or the seconds left before END, whichever is less (at least 1:
# `timeout 0` would mean no limit at all).
limit() { local left=$((END - SECONDS)); [ "$left" -lt 1 ] && left=1; if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi; }

if [ "$DRY" = 1 ]; then
    log "DRY RUN on $(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")'): no wheels, tiny model, ${LAUNCH[*]} ${EXTRA[*]}"
else
log "installing the carried wheels"
if [ "${SMOKE_SYSTEM_TRANSFORMERS:-0}" = 1 ]; then wheels=$(ls .whl/*.whl | grep -v -e /transformers- -e /regex-); else wheels=$(ls .whl/*.whl); fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# The working tree's code, not a possibly older carried wheel (setuptools is on the image).
if python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . > "$LOGS/pip-project.log" 2>&1; then
    log "installed oasst-data from the working tree"
else
    log "could not install the working tree (see $LOGS/pip-project.log); using the carried oasst-data wheel"
fi
export TORCH_CUDA_ARCH_LIST=9.0   # the image sets 9.0a, which DeepSpeed's op builder cannot parse
# fused Adam includes ATen/cuda/CUDAContext.h, which needs cusparse.h and cublas_v2.h: when the CUDA
# toolkit torch finds lacks them, use the headers of torch's own nvidia-* wheels.
nv_include=$(python3 -c "import os, nvidia; from torch.utils.cpp_extension import CUDA_HOME
if not os.path.isfile(os.path.join(CUDA_HOME or '/nonexistent', 'include', 'cusparse.h')):
    print(next((d for p in nvidia.__path__ for d in (os.path.join(p, 'cu13', 'include'),) if os.path.isfile(os.path.join(d, 'cusparse.h'))), ''))" 2>/dev/null)
[ -n "$nv_include" ] && export CPATH=$nv_include${CPATH:+:$CPATH} && log "CUDA toolkit lacks cusparse.h: CPATH=$CPATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# The carried transformers needs the image's tokenizers and huggingface-hub to be recent enough
# (5.24: tokenizers >=0.23.1,<0.24, huggingface-hub >=1.31); when they are not, it does not even
# import. Rather than lose the GPU session: drop the carried transformers and regex, as
# SMOKE_SYSTEM_TRANSFORMERS=1 does, and run on the image's own transformers.
if [ "${SMOKE_SYSTEM_TRANSFORMERS:-0}" != 1 ] \
    && ! python3 -c "import transformers; from transformers import Trainer, TrainingArguments" > "$LOGS/import-transformers.log" 2>&1; then
    log "the carried transformers does not import here: $(grep -E '^[A-Za-z_.]*(Error|Exception)' "$LOGS/import-transformers.log" | tail -n 1)"
    log "retrying with the image's own transformers (as SMOKE_SYSTEM_TRANSFORMERS=1 does; full error: $LOGS/import-transformers.log)"
    rm -rf /tmp/site/transformers /tmp/site/transformers-*.dist-info /tmp/site/regex /tmp/site/regex-*.dist-info
    export SMOKE_SYSTEM_TRANSFORMERS=1
fi
python3 - <<'EOF' || exit 1
import torch, transformers, accelerate, deepspeed, oasst_data
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, deepspeed {deepspeed.__version__}, oasst-data {oasst_data.__version__}")
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
assert torch.cuda.is_available(), "no CUDA device"
EOF
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true
# ZeRO-2 with the seed's AdamW runs DeepSpeed's FusedAdam, JIT-built with nvcc on first use. Built
# once here: if it fails, each ZeRO-2 run would rebuild and fail in turn; the runs without
# DeepSpeed still get their time.
log "building DeepSpeed's fused Adam (nvcc), once"
if timeout -k 15 "$(limit "${SMOKE_JIT_TIMEOUT:-240}")" python3 -c "from deepspeed.ops.op_builder import FusedAdamBuilder; FusedAdamBuilder().load()" \
    > "$LOGS/jit.log" 2>&1; then
    log "fused Adam ready"
else
    log "building fused Adam FAILED (see logs/jit.log); skipping the ZeRO-2 runs and the CLI check"; tail -n 20 "$LOGS/jit.log"
    NO_DEEPSPEED=1
fi
fi

log "building the fixtures with oasst-data build (real Pythia tokenizer)"
rm -rf "$WORK/fixture-shards" "$WORK/shards" "$WORK/shards-budget"
python3 -m oasst_data_cli build fixtures/oasst/trees.jsonl --alpaca fixtures/alpaca/alpaca.json \
    --tokenizer "$TOKENIZER" --lang en --val-split 0.2 --out "$WORK/fixture-shards" --json > "$LOGS/fixture-build.json" || exit 1
python3 benchmarks/synth_shards.py --template "$WORK/fixture-shards" --out "$WORK/shards" --rows "$ROWS" --val-rows "$VAL_ROWS" || exit 1
# The same rows, bucketed for the token budget (as `oasst-data build --bucket-batch-tokens` does).
python3 benchmarks/synth_shards.py --template "$WORK/fixture-shards" --out "$WORK/shards-budget" --rows "$ROWS" --val-rows "$VAL_ROWS" \
    --bucket-batch-tokens "$TOKENS" || exit 1

failed=0
run() {
    local name=$1 shards=$2; shift 2
    local -a launch=("${LAUNCH[@]}")
    [[ $name == *-no-deepspeed ]] && launch=(python3)   # one process, no launcher needed
    if [ "${NO_DEEPSPEED:-0}" = 1 ] && [[ $name != *-no-deepspeed ]]; then
        log "run $name skipped: DeepSpeed's fused Adam did not build"; failed=1; return
    fi
    local seconds; seconds=$(limit "${SMOKE_RUN_TIMEOUT:-240}")
    if [ "$seconds" -lt 30 ]; then
        log "run $name skipped: ${SECONDS}s elapsed (SMOKE_END=$END)"; failed=1; return
    fi
    log "run $name: $MODEL, $STEPS optimizer steps ($WARMUP untimed) on $(basename "$shards") $*"
    # A hang (a JIT build waiting on a lock, a stalled collective) must not eat the session.
    timeout -k 15 "$seconds" "${launch[@]}" benchmarks/gpu_smoke.py run --shards "$shards" --tokenizer "$TOKENIZER" --model "$MODEL" \
        --steps "$STEPS" --warmup "$WARMUP" --name "$name" --work "$WORK" --result "$RESULTS/$name.json" "${EXTRA[@]}" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    grep -E "step [0-9]+/|Error|error|Traceback|out of memory|^\{" "$LOGS/$name.log" | tail -n 12
    [ $rc -eq 124 ] && log "run $name timed out after ${seconds}s (SMOKE_RUN_TIMEOUT, SMOKE_END)"
    if [ $rc -ne 0 ] || [ ! -s "$RESULTS/$name.json" ]; then
        log "run $name FAILED (exit $rc); last lines:"; tail -n 40 "$LOGS/$name.log"; failed=1
    fi
}
run budget "$WORK/shards-budget" --batch-tokens "$TOKENS" --pad-to-multiple-of 8
run random4 "$WORK/shards" --batching random --rows 4
run buckets4 "$WORK/shards" --rows 4

log "comparison"
python3 benchmarks/gpu_smoke.py compare "$RESULTS/random4.json" "$RESULTS/buckets4.json" "$RESULTS/budget.json" | tee "$RESULTS/summary.txt"
verdict=${PIPESTATUS[0]}

if [ "${NO_DEEPSPEED:-0}" = 1 ]; then
    log "skipping the CLI check: it trains with the seed preset's ZeRO-2"
elif [ "${SMOKE_CLI:-1}" = 1 ] && ! python3 -m oasst_data_cli train --help > /dev/null 2>&1; then
    log "skipping the CLI check: cli/app.py does not register the train command"
elif [ "${SMOKE_CLI:-1}" = 1 ] && [ "$(limit 60)" -lt 60 ]; then
    log "skipping the CLI check: ${SECONDS}s elapsed (SMOKE_END=$END)"; failed=1
elif [ "${SMOKE_CLI:-1}" = 1 ]; then
    log "oasst-data train itself: seed preset + DeepSpeed in one process, save at step 2, resume to step 4"
    cli_model=pythia-160m; [ "$DRY" = 1 ] && cli_model=tiny
    python3 benchmarks/gpu_smoke.py write-config "$cli_model" "$WORK/model-cli" > /dev/null
    common=(--shards "$WORK/shards" --tokenizer "$TOKENIZER" --model "$WORK/model-cli" --random-init
            --preset reference-pythia-12b --output-dir "$WORK/cli" --batch-tokens "$TOKENS" --pad-to-multiple-of 8
            --learning-rate 1e-4 --warmup-steps 1 --eval-steps 2 --save-steps 2 --logging-steps 1 "${EXTRA[@]}")
    rm -rf "$WORK/cli"
    if timeout -k 15 "$(limit "${SMOKE_CLI_TIMEOUT:-150}")" python3 -m oasst_data_cli train "${common[@]}" --max-steps 2 > "$LOGS/cli.log" 2>&1 \
        && timeout -k 15 "$(limit "${SMOKE_CLI_TIMEOUT:-150}")" python3 -m oasst_data_cli train "${common[@]}" --max-steps 4 --resume last >> "$LOGS/cli.log" 2>&1; then
        grep -E "step [0-9]+/|trained:|resum" "$LOGS/cli.log" | tail -n 12
        ls "$WORK/cli" | tr '\n' ' '; echo
    else
        log "oasst-data train FAILED; last lines:"; tail -n 40 "$LOGS/cli.log"; failed=1
    fi
fi

# Extra runs while the device call has time left (it stops at ~10 minutes; what ran is saved):
# the same two batchings without DeepSpeed, to see what ZeRO-2 costs on a single GPU.
if [ "${SMOKE_EXTRAS:-1}" = 1 ]; then
    deadline=${SMOKE_EXTRAS_DEADLINE:-420}
    for extra in budget random4; do
        if [ $SECONDS -ge "$deadline" ]; then
            log "skipping the extra run $extra-no-deepspeed: ${SECONDS}s elapsed (SMOKE_EXTRAS_DEADLINE=$deadline)"; continue
        fi
        if [ $extra = budget ]; then
            run budget-no-deepspeed "$WORK/shards-budget" --batch-tokens "$TOKENS" --pad-to-multiple-of 8 --deepspeed none
        else
            run random4-no-deepspeed "$WORK/shards" --batching random --rows 4 --deepspeed none
        fi
    done
    log "every run (the verdict above compares the ZeRO-2 runs only)"
    python3 benchmarks/gpu_smoke.py compare --no-verdict "$RESULTS"/{random4,buckets4,budget,random4-no-deepspeed,budget-no-deepspeed}.json \
        | tee "$RESULTS/summary-all.txt"
fi

log "done (runs failed: $failed, comparison exit: $verdict)"
[ "$DRY" = 1 ] && verdict=0   # CPU speeds say nothing about the GPU goal: a dry run checks the plumbing
[ $failed -eq 0 ] && [ "$verdict" -eq 0 ]
