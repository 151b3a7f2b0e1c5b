#!/usr/bin/env bash
# GPU smoke test for the day a GPU is at hand: every method runs a few training steps on ONE GPU (trainer=gpu:
# bf16-mixed) and prints its median step time and peak CUDA memory (netcompress.callbacks.StepStats), then the
# MetaPruning search runs two tiny generations on the GPU. Everything on the embedded digits set: nothing to download.
#
#   bash scripts/gpu_smoke.sh                      # ~2-3 minutes on one GPU
#   STEPS=50 bash scripts/gpu_smoke.sh             # more steps per method
#   OPTIONS="+callbacks.compile._target_=netcompress.callbacks.CompileNet" bash scripts/gpu_smoke.sh
#   OPTIONS="+callbacks.channels_last._target_=netcompress.callbacks.ChannelsLast" bash scripts/gpu_smoke.sh
#   TRAINER=cpu STEPS=3 bash scripts/gpu_smoke.sh  # the same script on a CPU (checks the script, not the GPU)
#
# Exits 2 with a message when no CUDA GPU is visible; 1 when a method fails (its error is printed).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
STEPS=${STEPS:-20}
OPTIONS=${OPTIONS:-}
OUT=${OUT:-$(mktemp -d /tmp/gpu_smoke.XXXXXX)}
TRAINER=${TRAINER:-gpu}

if [ "$TRAINER" = gpu ] && ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_smoke: no CUDA GPU is visible (torch.cuda.is_available() is False; CUDA_VISIBLE_DEVICES=" \
         "${CUDA_VISIBLE_DEVICES-unset}). Run this on a machine with a GPU and a CUDA build of torch." >&2
    exit 2
fi
[ "$TRAINER" = gpu ] && "$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_smoke: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}')"

COMMON=("trainer=$TRAINER" trainer.max_epochs=1000 "+trainer.max_steps=$STEPS" +trainer.limit_val_batches=2
        +trainer.limit_test_batches=2 logger=none callbacks.progress_bar=null callbacks.model_summary=null
        +callbacks.step_stats._target_=netcompress.callbacks.StepStats)
failed=0
run() {  # run <name> <run.py arguments...>: prints the step-stats line, or the error
    local name=$1; shift
    printf '%-12s ' "$name"
    if (cd "$OUT" && "$PYTHON" "$OLDPWD/run.py" "$@" "${COMMON[@]}" $OPTIONS > "$OUT/$name.log" 2>&1); then
        grep -h '^\[step_stats\]' "$OUT/$name.log" || echo "(finished; no step stats: see $OUT/$name.log)"
    else
        echo "FAILED: $(grep -h '^error:' "$OUT/$name.log" || tail -n 5 "$OUT/$name.log")"
        failed=1
    fi
}

run supervised method=supervised model=lenet5 data.batch_size=256
run cckd       method=cckd data.batch_size=256
run kd         method=kd data.batch_size=256
run dafl       experiment=dafl_digits module.batch_size=512
run pruningnet experiment=metapruning_digits data.batch_size=256 test=false

ckpt=$(ls -t "$OUT"/logs/metapruning/runs/*/checkpoints/last.ckpt 2>/dev/null | head -n 1)
if [ -n "$ckpt" ]; then
    printf '%-12s ' search
    if (cd "$OUT" && "$PYTHON" "$OLDPWD/run.py" experiment=metapruning_digits_search "trainer=$TRAINER" logger=none \
            "search.pruningnet_ckpt=$ckpt" search.generations=2 search.population=8 search.parents=2 \
            search.mutations=4 search.crossovers=4 search.calib_batches=2 > "$OUT/search.log" 2>&1); then
        "$PYTHON" -c "import json, glob; r = json.load(open(sorted(glob.glob('$OUT/logs/metapruning_search/runs/*/metrics.json'))[-1])); print(f\"[search] 2 generations in {r['wall_time_s']:.1f} s, best held-out acc {r['metrics']['search/best_acc']:.3f}\")"
    else
        echo "FAILED: $(grep -h '^error:' "$OUT/search.log" || tail -n 5 "$OUT/search.log")"
        failed=1
    fi
fi
echo "gpu_smoke: logs in $OUT"
exit $failed
