#!/bin/bash
# fp32 vs bf16 quality runs of benchmarks/quality.py, on the device machine (or locally for a test).
# Env: PRESET (default), SEEDS ("0 1 2"), EXTRA (more --set overrides), OUT, PY (python3), SITE (/tmp/site), GEN_WORKERS (4)
source "$(dirname "$0")/setup.sh"
# phase 1: train (and evaluate) each precision x seed in its own process, all at once
pids=()
for p in fp32 bf16; do for s in $SEEDS; do
  OMP_NUM_THREADS=${THREADS:-2} $PY benchmarks/quality.py --preset $PRESET --seeds $s --set train.precision=$p $EXTRA \
    --cache "$SCR/data" --work "$SCR/work_$p" --models $MODELS --label "$p seed $s (train)" --n-boot 200 \
    > "$SCR/train_${p}_seed$s.json" 2> >(sed -u "s/^/[$p s$s] /" >&2) &
  pids+=($!)
done; done
fail=0; for pid in "${pids[@]}"; do wait $pid || fail=1; done
el phase 1 done fail=$fail
tar czf "$OUT/per_seed_train.tgz" -C "$SCR" $(cd "$SCR" && ls train_*.json) $(cd "$SCR" && ls -d work_*/seed*/*/train_summary.json 2>/dev/null)
[ $fail = 0 ] || exit 1
# phase 2: one quality.py per precision over all seeds, reusing the models trained above (evaluation only)
for p in fp32 bf16; do
  OMP_NUM_THREADS=${THREADS2:-8} $PY benchmarks/quality.py --preset $PRESET --seeds $SEEDS --set train.precision=$p $EXTRA \
    --cache "$SCR/data" --work "$SCR/work_$p" --models $MODELS --reuse $MODELS --label "train.precision=$p" \
    > "$OUT/quality_$p.json" 2> >(sed -u "s/^/[$p all] /" >&2) &
  qpids+=($!)
done
for pid in "${qpids[@]}"; do wait $pid; done
el phase 2 done
for p in fp32 bf16; do [ -s "$OUT/quality_$p.json" ] || echo "quality_$p.json EMPTY"; done
ls -la "$OUT"
