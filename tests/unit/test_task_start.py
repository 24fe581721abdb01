"""kfp.local tasks forked from the warm task server (pipelines.task_server) give what their own
interpreter gives: outputs, printed lines, exit codes, environment; and start with what earlier
tasks imported."""

import json
import os
import sys
import time

import pytest
from kfp import dsl
from kfp.local import subprocess_task_handler

from pipelines import task_server


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def probe(n: int, mode: str = "ok") -> str:
    import json
    import os
    import sys

    print(f"probe says {n}")
    if mode == "raise":
        raise ValueError(f"probe failed on {n}")
    if mode == "exit":
        sys.exit(3)
    before = "colorsys" in sys.modules
    own_before = "probe_own_module" in sys.modules
    if mode == "import":
        import colorsys  # noqa: F401 - the import is the point

        sys.path.insert(0, os.environ["VSEARCH_PROBE_DIR"])
        import probe_own_module  # noqa: F401

    return json.dumps({"n": n * 2, "env": os.environ.get("VSEARCH_PROBE"), "cwd": os.getcwd(),
                       "runtime": os.environ.get("_KFP_RUNTIME"), "colorsys_before": before,
                       "own_before": own_before})


def _command(out_dir, n: int, mode: str = "ok") -> list[str]:
    """The command kfp.local runs for one probe task (the compiled one, python3 replaced)."""
    os.makedirs(out_dir, exist_ok=True)
    executor_input = {
        "inputs": {"parameterValues": {"n": n, "mode": mode}},
        "outputs": {"parameters": {"Output": {"outputFile": str(out_dir / "Output")}},
                    "outputFile": str(out_dir / "executor_output.json")},
    }
    container = probe.component_spec.implementation.container
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container.args]
    return subprocess_task_handler.replace_python_executable(list(container.command) + args, sys.executable)


def _output(out_dir) -> dict:
    return json.loads(json.loads((out_dir / "executor_output.json").read_text())["parameterValues"]["Output"])


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Start the server inside the test: it takes tasks whose environment is the one it started
    with, and pytest changes PYTEST_CURRENT_TEST between a fixture's setup and the test."""
    monkeypatch.setenv("VSEARCH_PROBE", "from-the-run")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "probe_own_module.py").write_text("VALUE = 1\n")
    monkeypatch.setenv("VSEARCH_PROBE_DIR", str(tmp_path / "lib"))
    # Another module of that name, on the server's own path: importing "the same" module there
    # would give later tasks the wrong one.
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "probe_own_module.py").write_text("VALUE = 2\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(tmp_path / "shadow")])))
    return lambda: task_server.serving(str(tmp_path), preload=task_server.PRELOAD[:2])


def _env() -> dict:
    return {**os.environ, "_KFP_RUNTIME": "true"}


def _warm(path, command, env=None, timeout=60.0) -> tuple[int | None, str]:
    """Run through the server, waiting for it to listen; (exit code, printed text)."""
    request = task_server.task_request(command)
    assert request is not None
    deadline = time.monotonic() + timeout
    while True:
        lines: list[str] = []
        code = task_server.run_task(path, request, env or _env(), lines.append)
        if code is not None or env is not None or time.monotonic() > deadline:
            return code, "".join(lines)
        time.sleep(0.2)


def test_the_task_command_kfp_compiles_is_recognised_and_others_are_not(tmp_path):
    command = _command(tmp_path / "a", 1)
    request = task_server.task_request(command)
    assert request["source"] == command[3] and "def probe(" in request["source"]
    assert request["args"][0] == "--executor_input" and request["args"][-2:] == ["--function_to_execute", "probe"]
    assert task_server.task_request(["sh", "-ec", command[2] + "\necho more", *command[3:]]) is None
    assert task_server.task_request([command[0], command[1], command[2].replace(sys.executable, "python3"),
                                     *command[3:]]) is None
    assert task_server.task_request(["python3", "-m", "kfp.dsl.executor_main"]) is None
    # Same words, other lines: another shell program (the assignment would prefix printf).
    assert task_server.task_request(["sh", "-ec", command[2].replace(")\n\nprintf", ") printf"), *command[3:]]) is None


def test_a_forked_task_gives_what_its_own_interpreter_gives(tmp_path, server, capfd):
    with server() as path:
        code, printed = _warm(path, _command(tmp_path / "warm", 21))
    cold = subprocess_task_handler.run_local_subprocess(_command(tmp_path / "cold", 21))
    cold_printed = capfd.readouterr().out
    assert code == cold == 0
    assert _output(tmp_path / "warm") == _output(tmp_path / "cold") == {
        "n": 42, "env": "from-the-run", "cwd": os.getcwd(), "runtime": "true", "colorsys_before": False,
        "own_before": False}
    assert "probe says 21" in printed and "probe says 21" in cold_printed
    assert "Wrote executor output file" in printed
    assert "Warning" not in printed and "Warning" not in cold_printed  # (runpy's, had the server imported executor_main)


@pytest.mark.parametrize("mode, expected_code, expected_text", [("raise", 1, "ValueError: probe failed on 5"),
                                                                 ("exit", 3, "probe says 5")])
def test_a_failing_task_keeps_its_exit_code_and_traceback(tmp_path, server, capfd, mode, expected_code, expected_text):
    with server() as path:
        code, printed = _warm(path, _command(tmp_path / "warm", 5, mode))
    cold = subprocess_task_handler.run_local_subprocess(_command(tmp_path / "cold", 5, mode))
    assert code == cold == expected_code
    assert expected_text in printed and expected_text in capfd.readouterr().out
    assert not (tmp_path / "warm" / "executor_output.json").exists()


def test_a_task_starts_with_what_an_earlier_task_imported_from_the_installed_packages(tmp_path, server):
    """The first task imports colorsys (standard library) and a module of its own (from a folder
    it put on sys.path): the server imports colorsys for the next tasks, never the task's own."""
    with server() as path:
        assert _warm(path, _command(tmp_path / "first", 1, "import"))[0] == 0
        assert _output(tmp_path / "first")["colorsys_before"] is False
        for attempt in range(40):  # the server imports what it learnt while no task waits
            time.sleep(0.25)
            assert _warm(path, _command(tmp_path / f"next-{attempt}", 2))[0] == 0
            if _output(tmp_path / f"next-{attempt}")["colorsys_before"]:
                assert _output(tmp_path / f"next-{attempt}")["own_before"] is False
                break
        else:
            pytest.fail("the server never imported what the first task imported")


def test_a_task_with_another_environment_is_refused_and_does_not_run(tmp_path, server):
    with server() as path:
        assert _warm(path, _command(tmp_path / "warm", 1))[0] == 0  # the server is up
        code, printed = _warm(path, _command(tmp_path / "other", 1), env={**_env(), "VSEARCH_PROBE": "changed"})
    assert code is None and printed == ""
    assert not (tmp_path / "other" / "executor_output.json").exists()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def interpreter(step: int) -> str:
    import sys

    return f"{step}: " + " ".join(sys.orig_argv)


@pytest.mark.parametrize("warm", [True, False])
def test_a_local_run_forks_its_tasks_from_the_server_unless_told_not_to(tmp_path, warm):
    from kfp import compiler

    from pipelines.local import run_package

    @dsl.pipeline(name="probe-warm")
    def chain():
        first = interpreter(step=1)
        second = interpreter(step=2).after(first)
        interpreter(step=3).after(second)

    package = tmp_path / "probe.yaml"
    compiler.Compiler().compile(chain, str(package))
    manifest = run_package(package, tmp_path / "runs", warm=warm)
    ran = sorted(task["parameters"]["Output"] for task in manifest["tasks"].values())
    assert [line.split(":")[0] for line in ran] == ["1", "2", "3"]
    # The first task may start before the server listens; the later ones find it up.
    in_server = ["pipelines.task_server" in line for line in ran]
    assert (in_server[1] and in_server[2]) if warm else not any(in_server)
