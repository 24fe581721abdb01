"""A warm Python for kfp.local's subprocess tasks: import the heavy libraries once, fork per task.

Each kfp.local task is a fresh interpreter (``python3 -m kfp.dsl.executor_main``) that spends
most of its few seconds of work importing torch, transformers, pandas and the vsearch modules
(measured: benchmarks/task_start.py). During a local run, ``serving()`` starts one server
process with this run's environment; it imports those modules, and for every task forks a
child that runs exactly what the task's command would (the component source written to a
temporary folder, ``kfp.dsl.executor_main`` with the task's arguments and environment, its
output on the task's pipe) and reports its exit code. After a task, the server also imports
what that task imported, so the next ones start warmer. Nothing else changes: same code, same
inputs, same environment; the child skips only the interpreter's teardown (atexit handlers
still run, streams are flushed).

The server refuses a task (the caller then starts the task's own process, as kfp.local would)
when the task's environment differs from the one it imported with, or when a Python thread runs
in it (a fork would not carry the thread).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Sequence

# Imported before the first task: what the torch tasks all need (the rest is learnt per task).
# (kfp.dsl.executor_main itself runs as __main__: imported beforehand, runpy would warn.)
PRELOAD = ("kfp.dsl.executor", "kfp.dsl.kfp_config", "numpy", "pandas", "pyarrow.parquet", "yaml", "PIL.Image", "torch",
           "transformers", "transformers.modeling_utils")
EXECUTOR_MODULE = "kfp.dsl.executor_main"
REFUSED = -1000  # exit "code" of a task the server would not run
_HEADER = struct.Struct("!I")


def _send(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    payload = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], list(fds))
    else:
        sock.sendall(payload)


def _recv(sock: socket.socket, with_fds: bool = False) -> tuple[dict | None, list[int]]:
    buffer, fds = b"", []
    while len(buffer) < _HEADER.size or len(buffer) < _HEADER.size + _HEADER.unpack(buffer[: _HEADER.size])[0]:
        if with_fds and not fds:
            chunk, fds, _, _ = socket.recv_fds(sock, 1 << 16, 1)
        else:
            chunk = sock.recv(1 << 16)
        if not chunk:
            return None, fds
        buffer += chunk
    (size,) = _HEADER.unpack(buffer[: _HEADER.size])
    return json.loads(buffer[_HEADER.size : _HEADER.size + size]), fds


def task_request(full_command: Sequence[str]) -> dict | None:
    """{source, args} when ``full_command`` is kfp's lightweight-component command (``sh -ec``,
    the script that writes ``$0`` to ephemeral_component.py and runs kfp.dsl.executor_main with
    ``"$@"``, for this interpreter); None for any other command."""
    gap = " " * 25  # (kfp's line continuations)
    expected = ('program_path=$(mktemp -d)\n\nprintf "%s" "$0" > "$program_path/ephemeral_component.py"\n'
                f'_KFP_RUNTIME=true {sys.executable} -m {EXECUTOR_MODULE}{gap}--component_module_path{gap}'
                f'"$program_path/ephemeral_component.py"{gap}"$@"\n')
    if len(full_command) < 4 or list(full_command[:3]) != ["sh", "-ec", expected]:
        return None
    return {"source": full_command[3], "args": list(full_command[4:])}


def _exit_code(exc: BaseException | None) -> int:
    """The exit status the interpreter gives a program that ended with ``exc`` (printing what
    it would print)."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    traceback.print_exception(exc)
    return 1


def _installed(names: set[str]) -> list[str]:
    """The modules among ``names`` that come from the standard library, the installed packages
    or vsearch: what the server may import for later tasks (not a task's own files, which
    another module of the same name could shadow in the server)."""
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {os.path.realpath(paths[key]) + os.sep for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    vsearch = sys.modules.get("vsearch")
    if vsearch is not None and getattr(vsearch, "__file__", None):
        roots.add(os.path.realpath(os.path.dirname(vsearch.__file__)) + os.sep)
    keep = []
    for name in sorted(names):
        origin = getattr(sys.modules.get(name), "__file__", None)
        if name not in ("__main__", EXECUTOR_MODULE) and origin and os.path.realpath(origin).startswith(tuple(roots)):
            keep.append(name)
    return keep


def _run_task(report_fd: int, request: dict, out_fd: int) -> None:
    """In the forked child: become the task's process, run it, write the modules it imported
    to ``report_fd``, exit with its exit code."""
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    before = set(sys.modules)
    program_path = tempfile.mkdtemp(prefix="tmp.")
    module_path = os.path.join(program_path, "ephemeral_component.py")
    with open(module_path, "w") as fh:
        fh.write(request["source"])
    sys.argv = [EXECUTOR_MODULE, "--component_module_path", module_path, *request["args"]]
    sys.path[0] = request["cwd"]  # as `python -m` sets it
    error = None
    try:
        runpy.run_module(EXECUTOR_MODULE, run_name="__main__", alter_sys=True)
    except BaseException as exc:  # noqa: BLE001 - reported as the interpreter would
        error = exc
    code = _exit_code(error)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        learnt = _installed(set(sys.modules) - before)
        with contextlib.suppress(OSError), open(report_fd, "w") as report:
            json.dump({"modules": learnt}, report)
        os._exit(code & 0xFF)


def _serve_one(listener: socket.socket, env: dict) -> list[str]:
    """Accept one task and fork its child; the modules the task imported (to preload next)."""
    conn, _ = listener.accept()
    with conn:
        request, fds = _recv(conn, with_fds=True)
        if request is None or len(fds) != 1:
            return []
        refuse = request["env"] != env or threading.active_count() != 1
        if refuse:
            os.close(fds[0])
            _send(conn, {"code": REFUSED, "modules": []})
            return []
        sys.stdout.flush()
        sys.stderr.flush()
        # The child's report goes to a file, read once the child has ended (a pipe would wait
        # for any grandchild that inherited it).
        report_fd, report_path = tempfile.mkstemp(prefix="vsearch-task-", suffix=".json")
        pid = os.fork()
        if pid == 0:
            listener.close()
            conn.close()
            try:
                _run_task(report_fd, request, fds[0])
            finally:
                os._exit(1)  # (only if setting up the task failed: _run_task exits itself)
        os.close(fds[0])
        os.close(report_fd)
        _, status = os.waitpid(pid, 0)
        try:
            with open(report_path) as report:
                learnt = list(json.load(report)["modules"])
        except (OSError, ValueError, KeyError):
            learnt = []  # (a child killed before it could report)
        finally:
            os.unlink(report_path)
        # The exit status a process of its own would have: a killed one's signal as a negative code.
        _send(conn, {"code": os.waitstatus_to_exitcode(status), "modules": []})
        return learnt


def serve(path: str, preload: Sequence[str]) -> None:
    """The server's main loop: import ``preload`` one module at a time, serving tasks between
    imports, until the parent goes away or the socket is closed."""
    env = dict(os.environ)
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    pending, seen = list(preload), set()
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], 0 if pending else 1.0)
        if ready:
            pending += [m for m in _serve_one(listener, env) if m not in seen]
        elif pending:
            module = pending.pop(0)
            seen.add(module)
            if module not in sys.modules:
                with contextlib.suppress(Exception):
                    importlib.import_module(module)


@contextlib.contextmanager
def serving(workdir: str, preload: Sequence[str] = PRELOAD) -> Iterator[str]:
    """Start a server for tasks run with this process's environment (plus ``_KFP_RUNTIME=true``,
    as the task command sets it); yields its socket path. It stops when the block ends."""
    path = os.path.join(workdir, "task-server.sock")
    env = {**os.environ, "_KFP_RUNTIME": "true"}
    code = f"import sys; from pipelines.task_server import serve; serve(sys.argv[1], {list(preload)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code, path], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield path
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate ``proc``; kill it if it has not ended after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_task(path: str, request: dict, env: dict, on_line) -> int | None:
    """Run one task through the server at ``path``, passing each output line to ``on_line``;
    its exit code, or None when no server answers or it refuses the task."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    read_fd, write_fd = os.pipe()
    with sock:
        try:
            _send(sock, {**request, "env": env, "cwd": os.getcwd()}, [write_fd])
        finally:
            os.close(write_fd)
        with open(read_fd, encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                on_line(line)
        reply, _ = _recv(sock)
    if reply is None:  # the server went away during the task
        on_line("vsearch: the task server stopped before the task reported its exit code\n")
        return 1
    return None if reply["code"] == REFUSED else int(reply["code"])
