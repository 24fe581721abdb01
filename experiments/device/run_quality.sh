#!/bin/bash
# fp32 vs bf16 quality runs of benchmarks/quality.py, on the device machine (or locally for a test).
# Env: PRESET (default), SEEDS ("0 1 2"), EXTRA (more --set overrides), OUT, PY (python3), SITE (/tmp/site), GEN_WORKERS (4)
set -u -o pipefail
PRESET=${PRESET:-default}; SEEDS=${SEEDS:-"0 1 2"}; EXTRA=${EXTRA:-}; PY=${PY:-python3}; SITE=${SITE:-/tmp/site}
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
$PY -c "import torch, transformers, tokenizers, kornia, numpy, pandas; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'kornia', kornia.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__)" || exit 1
$PY -c "from vsearch.models.mobilenet import resolve_weights; print(resolve_weights('imagenet'))" || exit 1
git log -1 --format='commit %H %s' 2>/dev/null; git status --short 2>/dev/null | grep -v '^ M \(docs\|tests\|pipelines\|README\)' | head -60; grep -n 'requires_grad_(False)' src/vsearch/models/multitower.py src/vsearch/models/towers.py
# data: one dataset per seed, generated in parallel, shared by both precisions
for s in $SEEDS; do
  $PY -c "from vsearch.data import synth; import json; print(json.dumps(synth.generate('$SCR/data/$PRESET-seed$s', '$PRESET', seed=$s, workers=$GEN_WORKERS, overwrite=True)))" &
  gpids+=($!)
done
for pid in "${gpids[@]}"; do wait $pid; done
for s in $SEEDS; do [ -f "$SCR/data/$PRESET-seed$s/synth_config.json" ] || { echo "data seed $s missing"; exit 1; }; done
el data done
$PY .device/check_tokens.py "$SCR"/data/* || exit 1
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
