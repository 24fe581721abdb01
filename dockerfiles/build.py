"""Build the project images with podman and record what was built: ``make images``.

    python dockerfiles/build.py [--gpu skip|resolve|full] [--record build/images.json]

1. **Base.** ``--base debian`` (the default) makes Debian bookworm (Python 3.11) from Debian's
   own packages: ``debootstrap`` into a folder, ``podman import``, then
   ``dockerfiles/Dockerfile.base`` adds the venv module. Nothing comes from an image registry.
   ``--base IMAGE`` takes a registry image instead (e.g. ``python:3.11.13-slim-bookworm@sha256:...``).
2. **CPU image** from ``dockerfiles/Dockerfile``, tagged ``localhost/vsearch:<content hash>``.
3. **GPU image** from ``dockerfiles/Dockerfile.gpu``: ``--gpu resolve`` (the default) builds its
   ``resolve`` stage only, which resolves CUDA torch, torchvision and the locked install
   against the indexes without downloading ~3 GB of CUDA wheels; ``--gpu full`` builds it all.
4. **Record** ``build/images.json``: per image its reference, image ID, digest, content hash,
   base and code version. ``vsearch pipeline compile --images build/images.json`` compiles
   the pipelines with these references.

Every image is tagged by a content hash of what goes into it (the Dockerfile, the files it
copies, the base image's ID, the build arguments): an unchanged tree reuses the image and
builds nothing. Builds reach the package indexes with ``--network host``; this machine's pip
settings (index, find-links, CA bundle) are mounted read-only for the build under
``/run/vsearch-build`` with a generated pip.conf (passed as the build argument PIP_CONFIG_FILE)
and are never written into a layer.
Images run with ``--network none``.

Podman here needs ``runc`` and ``cgroupfs`` and no default ulimits (shared NOTES.md): unless
``CONTAINERS_CONF`` is set, this script writes such a containers.conf under ``build/`` and
points podman at it. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
RECORD = BUILD / "images.json"
DOCKERFILES = {"base": ROOT / "dockerfiles" / "Dockerfile.base", "cpu": ROOT / "dockerfiles" / "Dockerfile",
               "gpu": ROOT / "dockerfiles" / "Dockerfile.gpu"}
# What the Dockerfiles COPY from the build context (tests/unit/test_dockerfiles.py holds the
# .dockerignore to the same list): the content hash covers exactly these.
CONTEXT = ("constraints.txt", "pyproject.toml", "README.md", "src", "components", "pipelines", "feature_repo")
SUITE, DEFAULT_MIRROR = "bookworm", "http://deb.debian.org/debian"
DEBOOTSTRAP = ("--variant=minbase", "--include=python3.11,ca-certificates")
REPOS = {"base": "localhost/vsearch-base", "cpu": "localhost/vsearch", "gpu": "localhost/vsearch-gpu",
         "gpu-resolve": "localhost/vsearch-gpu-resolve"}
CONTAINERS_CONF = """\
# Written by dockerfiles/build.py (shared NOTES.md: podman on these machines).
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""
# pip settings passed to a build (all others are left out): where packages come from and how TLS is checked.
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "cert", "constraint", "default-timeout", "trusted-host")
# Everything a build mounts lives under one folder, so that nothing lands elsewhere in a layer
# (podman leaves an empty mount point behind: /run/vsearch-build stays, empty). The Dockerfiles
# read the generated pip.conf through the build argument PIP_CONFIG_FILE (an ARG: not in the image).
MOUNT_ROOT = "/run/vsearch-build"
PIP_CONF = f"{MOUNT_ROOT}/pip/pip.conf"


class BuildError(RuntimeError):
    pass


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env:
        conf = BUILD / "containers" / "containers.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
            conf.write_text(CONTAINERS_CONF)
        env["CONTAINERS_CONF"] = str(conf)
    return env


def podman(*args: str, capture: bool = False) -> str:
    """Run podman; with ``capture`` its output is returned and a failure's BuildError carries
    podman's last error line (its other stderr lines still reach the terminal)."""
    cmd = ["podman", *args]
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.run(cmd, env=podman_env(), text=True, stdout=pipe, stderr=pipe)
    lines = (proc.stderr or "").strip().splitlines()
    if proc.returncode != 0:
        sys.stderr.write("".join(f"{line}\n" for line in lines[:-1]))
        said = f": {lines[-1].removeprefix('Error: ')}" if lines else ""
        raise BuildError(f"{' '.join(cmd[:3])} ... exited with {proc.returncode}{said}")
    sys.stderr.write("".join(f"{line}\n" for line in lines))
    return (proc.stdout or "").strip()


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], env=podman_env()).returncode == 0


def inspect(ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref, capture=True))[0]


# --- content hashes ---------------------------------------------------------------------------


def _hash_tree(h: "hashlib._Hash", path: Path) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        if "__pycache__" in f.parts or f.suffix == ".pyc" or f.name.endswith(".egg-info"):
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")


def content_hash(dockerfile: Path, base_id: str, build_args: dict[str, str], target: str | None = None) -> str:
    h = hashlib.sha256()
    h.update(dockerfile.read_bytes())
    h.update(json.dumps({"base": base_id, "args": build_args, "target": target}, sort_keys=True).encode())
    for name in CONTEXT:
        _hash_tree(h, ROOT / name)
    return h.hexdigest()


# --- the machine's pip settings, for the build only ---------------------------------------------


def pip_settings() -> dict[str, str]:
    """This interpreter's effective pip settings (files and PIP_* variables), as pip resolves them."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"(?:global|install|:env:)\.([a-z-]+)='(.*)'", line.strip())
        if m and m[1] in PIP_KEYS:
            settings[m[1]] = m[2]  # later lines (environment) win, as in pip
    return settings


def _local_paths(value: str) -> list[Path]:
    out = []
    for item in value.split():
        path = Path(urlparse(item).path) if item.startswith("file://") else Path(item) if item.startswith("/") else None
        if path is None or not path.exists():
            continue
        # A file:// simple index links its files relatively: mount the folder above "simple".
        out.append(path.parent if path.name == "simple" else path)
    return out


def pip_mounts(settings: dict[str, str], keys: tuple[str, ...]) -> tuple[str, list[str]]:
    """(pip.conf text, read-only --volume arguments) for the chosen settings.

    Each local path a setting names is mounted under ``MOUNT_ROOT/host`` and the setting is
    rewritten to point there.
    """
    chosen = {k: v for k, v in settings.items() if k in keys}
    volumes: list[str] = []
    mounted: set[Path] = set()
    for key, value in chosen.items():
        for path in _local_paths(value):
            inside = f"{MOUNT_ROOT}/host{path}"
            if path not in mounted:
                volumes += ["--volume", f"{path}:{inside}:ro"]
                mounted.add(path)
            # a bare path, or the path of a file:// URL (file:///opt/pypi/simple), where it starts a word
            value = re.sub(rf"(?:(?<=file://)|(?<![\w/])){re.escape(str(path))}(?=/|\s|$)", inside, value)
        chosen[key] = value
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in chosen.items()), volumes


def local_cpu_torch(settings: dict[str, str]) -> bool:
    """Does pip here find a local wheel of the lock's CPU torch (a machine without the PyTorch index)?"""
    torch = next(line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch=="))
    return any(list(p.glob(f"torch-{torch}+cpu-*.whl")) for p in _local_paths(settings.get("find-links", "")) if p.is_dir())


# --- steps -------------------------------------------------------------------------------------


def apt_mirror() -> str:
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        text = src.read_text() if src.exists() else ""
        m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(r"^deb\s+(\S+/debian)\s+bookworm\b", text, re.M)
        if m:
            return m[1]
    return DEFAULT_MIRROR


def build_base(mirror: str) -> str:
    """Debian bookworm from Debian's packages, with the venv module: its image reference."""
    h = hashlib.sha256(json.dumps([SUITE, mirror, DEBOOTSTRAP, DOCKERFILES["base"].read_text()]).encode()).hexdigest()[:16]
    ref = f"{REPOS['base']}:{SUITE}-{h}"
    if image_exists(ref):
        print(f"base: {ref} (cached)", flush=True)
        return ref
    if not shutil.which("debootstrap"):
        raise BuildError("debootstrap not found: apt-get install debootstrap (or pass --base IMAGE)")
    rootfs_ref = f"localhost/vsearch-rootfs:{SUITE}-{h}"
    BUILD.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=BUILD) as tmp:
        rootfs = Path(tmp) / "rootfs"
        print(f"base: debootstrap {SUITE} from {mirror} ...", flush=True)
        proc = subprocess.run(["debootstrap", *DEBOOTSTRAP, SUITE, str(rootfs), mirror], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"debootstrap failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", rootfs_ref], stdin=tar.stdout, env=podman_env(),
                                  stdout=subprocess.DEVNULL)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise BuildError(f"podman import of {rootfs} failed")
    with tempfile.TemporaryDirectory(prefix="base-context-", dir=BUILD) as empty:
        podman("build", "--network", "host", "--build-arg", f"ROOTFS={rootfs_ref}", "-f", str(DOCKERFILES["base"]),
               "-t", ref, empty)
    podman("rmi", rootfs_ref, capture=True)
    return ref


def git_revision() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_image(kind: str, base: str, pip_conf: str, volumes: list[str], build_args: dict[str, str],
                target: str | None = None) -> dict:
    dockerfile = DOCKERFILES[kind]
    base_id = inspect(base)["Id"]
    digest = content_hash(dockerfile, base_id, build_args, target)
    repo = REPOS["gpu-resolve"] if target == "resolve" else REPOS[kind]
    ref = f"{repo}:{digest[:16]}"
    revision = git_revision()
    # The builder stage is tagged too (``<repo>-builder:<hash>``): untagged, each source change's
    # builder layers (about 35 MB) would stay in podman's storage for good; tagged, `prune_older`
    # removes the earlier ones like the earlier images (the shared dependency layers stay).
    has_builder = re.search(r"^FROM\s+\S+\s+AS\s+builder\s*$", dockerfile.read_text(), re.M | re.I)
    builder = f"{repo}-builder:{digest[:16]}" if target is None and has_builder else None
    if image_exists(ref) and (builder is None or image_exists(builder)):
        print(f"{kind}: {ref} (cached: same content hash)", flush=True)
    else:
        with tempfile.TemporaryDirectory(prefix="pip-", dir=BUILD) as tmp:
            conf = Path(tmp) / "pip.conf"
            conf.write_text(pip_conf)
            args = ["build", "--network", "host", "-f", str(dockerfile),
                    "--label", f"vsearch.content-hash={digest}", "--volume", f"{tmp}:{Path(PIP_CONF).parent}:ro", *volumes,
                    "--build-arg", f"PIP_CONFIG_FILE={PIP_CONF}",
                    "--build-arg", f"BASE={base}", "--build-arg", f"VCS_REF={revision}"]
            for key, value in sorted(build_args.items()):
                args += ["--build-arg", f"{key}={value}"]
            print(f"{kind}: building {ref} ...", flush=True)
            if builder is not None:  # then the whole build below reuses every builder layer
                podman(*args, "-t", builder, "--target", "builder", str(ROOT))
            podman(*args, "-t", ref, *(["--target", target] if target else []), str(ROOT))
    info = inspect(ref)
    entry = {"ref": ref, "id": info["Id"], "digest": info.get("Digest"), "content_hash": digest, "base": base,
             "code_version": info.get("Labels", {}).get("org.opencontainers.image.revision", revision),
             "target": target or "runtime", "size_bytes": info.get("Size")}
    return entry | ({"builder": builder} if builder else {})


def prune_older(built: dict) -> list[str]:
    """Untag the earlier content-hash tags of the repositories just built, and of their builder
    stages (podman then removes the layers nothing else uses).

    Only tags this script made (``vsearch.content-hash`` label) and not the ones just built go;
    layers the new images share stay (the dependency venv: podman's layer cache, which lets a
    source-only change rebuild only the package layers).
    """
    removed = []
    for current in [ref for entry in built.values() for ref in (entry["ref"], entry.get("builder")) if ref]:
        repo = current.rsplit(":", 1)[0]
        listing = podman("images", "--filter", f"reference={repo}", "--filter", "label=vsearch.content-hash",
                         "--format", "{{.Repository}}:{{.Tag}}", capture=True)
        for ref in sorted(set(listing.split())):
            if ref != current and not ref.endswith(":<none>"):
                try:
                    podman("rmi", ref, capture=True)
                except BuildError as err:  # e.g. in use by a container: it stays, the build still stands
                    print(f"kept {ref}: {err}")
                    continue
                removed.append(ref)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="debian", help="'debian' (debootstrap, no registry) or a base image reference")
    ap.add_argument("--mirror", default=None, help="Debian mirror for --base debian (default: the machine's apt source)")
    ap.add_argument("--gpu", choices=("skip", "resolve", "full"), default="resolve")
    ap.add_argument("--record", default=str(RECORD), help="where to write the record (JSON)")
    ap.add_argument("--keep-old", action="store_true", help="keep the earlier content-hash tags (default: untag them)")
    args = ap.parse_args(argv)
    if not shutil.which("podman"):
        print("build.py: podman not found: apt-get install podman buildah runc (shared NOTES.md)", file=sys.stderr)
        return 2
    BUILD.mkdir(exist_ok=True)
    try:
        base = build_base(args.mirror or apt_mirror()) if args.base == "debian" else args.base
        settings = pip_settings()
        # Where the PyTorch index is unreachable, pip's own configuration (its index and a local CPU
        # wheel of the lock's torch) is what the machine offers: use it; else the Dockerfiles' default.
        local = local_cpu_torch(settings)
        index = {"TORCH_INDEX_URL": settings.get("index-url", "https://pypi.org/simple")} if local else {}
        conf, volumes = pip_mounts(settings, PIP_KEYS)
        record = {"cpu": build_image("cpu", base, conf, volumes, index)}
        if args.gpu != "skip":
            # CUDA torch must not meet the local CPU wheel: the GPU build sees the index and the CA only.
            gpu_conf, gpu_volumes = pip_mounts(settings, ("index-url", "cert", "default-timeout"))
            record["gpu"] = build_image("gpu", base, gpu_conf, gpu_volumes, index,
                                        target="resolve" if args.gpu == "resolve" else None)
        for ref in [] if args.keep_old else prune_older(record):
            print(f"removed the earlier build {ref}", flush=True)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.record).with_suffix(".partial")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.record)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
