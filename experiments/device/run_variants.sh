#!/bin/bash
# Recipe candidates vs nothing changed: benchmarks/quality.py per variant, on the device machine.
# VARIANTS: "name|--set ...|--four-set ..." entries separated by ";" (quality.py's own flags).
source "$(dirname "$0")/setup.sh"
IFS=';' read -ra VARS <<< "$VARIANTS"
pids=()
for v in "${VARS[@]}"; do
  IFS='|' read -r name every four <<< "$v"
  for s in $SEEDS; do
    OMP_NUM_THREADS=${THREADS:-2} $PY benchmarks/quality.py --preset $PRESET --seeds $s --set train.precision=bf16 $every \
      ${four:+--four-set $four} --cache "$SCR/data" --work "$SCR/work_$name" --models $MODELS --label "$name seed $s (train)" \
      --n-boot 200 > "$OUT/train_${name}_seed$s.json" 2> >(sed -u "s/^/[$name s$s] /" >&2) &
    pids+=($!)
  done
done
fail=0; for pid in "${pids[@]}"; do wait $pid || fail=1; done
el phase 1 done fail=$fail
[ $fail = 0 ] || exit 1
for v in "${VARS[@]}"; do
  IFS='|' read -r name every four <<< "$v"
  OMP_NUM_THREADS=${THREADS2:-5} $PY benchmarks/quality.py --preset $PRESET --seeds $SEEDS --set train.precision=bf16 $every \
    ${four:+--four-set $four} --cache "$SCR/data" --work "$SCR/work_$name" --models $MODELS --reuse $MODELS \
    --label "$name: bf16 $every ${four:+four: $four}" > "$OUT/quality_$name.json" 2> >(sed -u "s/^/[$name all] /" >&2) &
  qpids+=($!)
done
for pid in "${qpids[@]}"; do wait $pid; done
el phase 2 done
ls -la "$OUT"
