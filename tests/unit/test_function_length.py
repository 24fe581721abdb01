"""No function in the package is over ``MAX_LINES`` lines (``def`` to its last line, docstring
included) unless its docstring says why on a line starting with ``Long because:``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "vsearch"
MAX_LINES = 80
MARKER = "Long because:"
# (module path under src/vsearch, function name) -> why it is let off for now. An entry whose
# function is no longer long (or has its reason line) fails `test_pending_entries_are_needed`.
PENDING: dict[tuple[str, str], str] = {
}


@functools.cache
def _long_functions(root: Path = PACKAGE) -> list[tuple[str, str, int, int]]:
    """(path under ``root``, qualified name, first line, length) of each function over MAX_LINES without a reason."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        length = child.end_lineno - child.lineno + 1
                        doc = ast.get_docstring(child) or ""
                        reasoned = any(line.strip().startswith(MARKER) for line in doc.splitlines())
                        if length > MAX_LINES and not reasoned:
                            found.append((rel, name, child.lineno, length))
                    visit(child, f"{name}.")
                else:
                    visit(child, prefix)

        visit(ast.parse(path.read_text(), filename=str(path)), "")
    return found


def _pending(rel: str, name: str) -> bool:
    return any(rel.startswith(prefix) and name.split(".")[-1] == func for prefix, func in PENDING)


def test_no_long_function_without_a_reason():
    offenders = [f"{rel}:{line} {name} ({length} lines)" for rel, name, line, length in _long_functions()
                 if not _pending(rel, name)]
    assert not offenders, (
        f"functions over {MAX_LINES} lines: split them, or add a docstring line "
        f"'{MARKER} <one line>':\n" + "\n".join(offenders))


def test_pending_entries_are_needed():
    long = _long_functions()
    stale = [key for key in PENDING if not any(rel.startswith(key[0]) and name.split(".")[-1] == key[1]
                                               for rel, name, _, _ in long)]
    assert not stale, f"remove these PENDING entries, their functions are fine now: {stale}"


def test_the_check_sees_a_long_function(tmp_path):
    def body(indent: str) -> str:
        return "\n".join(f"{indent}x{i} = {i}" for i in range(MAX_LINES))

    (tmp_path / "m.py").write_text(
        f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body(' ' * 8)}\n\n\n"
        f"def explained():\n    \"\"\"Doc.\n\n    {MARKER} a table.\n    \"\"\"\n{body(' ' * 4)}\n")
    assert [(rel, name, length) for rel, name, _, length in _long_functions(tmp_path)] == [("m.py", "C.long", MAX_LINES + 1)]
