#!/bin/bash
# Recipe candidates vs nothing changed: benchmarks/quality.py per variant, on the device machine.
# VARIANTS: "name|--set ...|--four-set ..." entries separated by ";" (quality.py's own flags).
# Env as run_quality.sh: PRESET (default), SEEDS ("0 1 2"), OUT, PY (python3), SITE (/tmp/site), GEN_WORKERS (4)
set -u -o pipefail
PRESET=${PRESET:-default}; SEEDS=${SEEDS:-"0 1 2"}; PY=${PY:-python3}; SITE=${SITE:-/tmp/site}
GEN_WORKERS=${GEN_WORKERS:-4}; SCR=${SCR:-/tmp/gq}; MODELS=${MODELS:-"image_only three_tower four_tower"}
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
exec > >(tee -a "$OUT/log.txt") 2>&1
rm -rf "$SCR"; mkdir -p "$SCR"; gpids=(); qpids=()
if [ -n "${INSTALL_WHL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
fi
$PY .device/unpack.py "$SITE" || exit 1
export PYTHONPATH="$SITE:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  DO_NOT_TRACK=1 VSEARCH_CACHE_DIR="$SCR/vcache"
el setup done; nvidia-smi -L 2>/dev/null; nproc
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" || exit 1
$PY -c "from vsearch.models.mobilenet import resolve_weights; print(resolve_weights('imagenet'))" || exit 1
git log -1 --format='commit %H %s' 2>/dev/null
for s in $SEEDS; do
  $PY -c "from vsearch.data import synth; synth.generate('$SCR/data/$PRESET-seed$s', '$PRESET', seed=$s, workers=$GEN_WORKERS, overwrite=True)" &
  gpids+=($!)
done
for pid in "${gpids[@]}"; do wait $pid; done
el data done
$PY .device/check_tokens.py "$SCR"/data/* || exit 1
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
