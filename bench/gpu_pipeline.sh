#!/usr/bin/env bash
# End-to-end CUDA check of the training and evaluation path on a memory built on the CPU:
# trains a baseline and its RETRO twin on the same tokens, checks that an interrupted CUDA run resumes
# to the same loss curve, then scores both (bits-per-byte, RETRO[OFF]/[ON], leakage, k sweep) on CUDA.
#   MEM=mem/ DATA=valid.tokens EVAL=eval-cache/ OUT=out/ STEPS=1500 bash bench/gpu_pipeline.sh
# EVAL may hold the evaluation neighbours cached by an earlier `burrow eval` (the GPU machine then
# needs neither FAISS nor the frozen encoder).
set -euo pipefail
: "${MEM:?memory directory}" "${DATA:?evaluation file}" "${OUT:?output directory}"
EVAL=${EVAL:-$OUT/eval}; STEPS=${STEPS:-1500}; BATCH=${BATCH:-32}; BASE=${BASE:-cpu-small}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
B="python3 -m burrow.cli"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
RUNS=/tmp/gpu-runs; rm -rf $RUNS
common="--memory $MEM --batch-size $BATCH --seq-len 512 --lr 1e-3 --device cuda --no-progress"
# 1. resume on CUDA: an uninterrupted 60-step run vs the same run interrupted (SIGINT) and re-run
$B train --model retro-tiny $common --steps 60 --checkpoint-every 20 --eval-every 20 -o $RUNS/straight
timeout -s INT 25 $B train --model retro-tiny $common --steps 60 --checkpoint-every 20 --eval-every 20 \
  -o $RUNS/resumed || echo "interrupted (exit $?)"
$B train --model retro-tiny $common --steps 60 --checkpoint-every 20 --eval-every 20 -o $RUNS/resumed
python3 - "$RUNS" <<'PY'
import json, sys
def curve(p):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{p}/metrics.jsonl")]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}
a, b = curve("straight"), curve("resumed")
diff = max(abs(a[s] - b[s]) for s in a)
print(f"resume on CUDA: {len(a)} steps, max |loss straight - loss resumed| = {diff:.2e}")
PY
# 2. baseline and RETRO, same decoder, same tokens, same steps
for model in $BASE retro-$BASE; do
  $B train --model $model $common --steps $STEPS --eval-every $((STEPS / 5)) -o $RUNS/$model
  tail -n 1 $RUNS/$model/metrics.jsonl
done
# 3. evaluation on CUDA
$B eval $RUNS/$BASE $RUNS/retro-$BASE --memory $MEM --data $DATA -o $EVAL ${EVAL_FLAGS---leakage --sweep-k} --device cuda
cp $EVAL/eval.json $EVAL/eval.md $EVAL/*.png "$OUT"/ 2>/dev/null || true
