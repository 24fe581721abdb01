#!/bin/bash
# Sourced by run_quality.sh and run_variants.sh: defaults, logging to $OUT/log.txt, the carried
# wheels and weight packages, the environment, and one `default` dataset per seed in $SCR/data.
# Env: PRESET (default), SEEDS ("0 1 2"), OUT, PY (python3), SITE (/tmp/site), GEN_WORKERS (4), INSTALL_WHL
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
