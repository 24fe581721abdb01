"""A scanner for secret-looking literal values in configuration and documentation files.

It flags, line by line: private-key PEM headers, AWS access key ids, and a key whose name
says password / secret / token / api key / access key / private key followed by ``:`` or
``=`` and a literal value. References are not secrets and pass: ``$(VAR)``, ``${VAR}``,
``$VAR``, ``<placeholder>``, an environment variable name (``VSEARCH_MILVUS_TOKEN``), a YAML
structure opener, booleans and numbers-only values, and keys that name something
(``secretRef``, ``secretName``, ``token_env``, ``tokenPath``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PEM = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
KEY_VALUE = re.compile(
    r"(?i)(?P<key>[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)[A-Za-z0-9_.-]*)"
    r"[\"']?\s*[:=]\s*(?P<value>[^\s,;}\]]+)"
)
_REFERENCE = (
    re.compile(r"^\$[({]?[A-Za-z_][A-Za-z0-9_]*[)}]?"),  # $(VAR) ${VAR} $VAR, also "$(openssl ...)"
    re.compile(r"^\$\("),
    re.compile(r".*<[^>]+>.*"),  # <placeholder>
    re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$"),  # an environment variable name
    re.compile(r"^[\[{|>&*!]"),  # YAML structure, anchors, aliases, tags
    re.compile(r"^(?i:true|false|null|none|~|yes|no|optional|required)$"),
    re.compile(r"^[0-9.]+$"),
)


# Key names that hold a reference (a Secret's name, an environment variable's name, a path).
_REFERENCE_KEYS = re.compile(r"(?i).*(?:ref|name|env|path|file)$")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    text: str


def _literal(value: str) -> bool:
    value = value.strip().strip("\"'`.")
    if len(value) < 6 or re.search(r"\$[({]?[A-Za-z_]", value):  # built from a variable: "root:$PASSWORD"
        return False
    return not any(p.match(value) for p in _REFERENCE)


def scan_text(text: str, path: str = "<text>") -> list[Finding]:
    """Findings in ``text`` (1-based line numbers)."""
    findings = []
    for number, line in enumerate(text.splitlines(), 1):
        if PEM.search(line):
            findings.append(Finding(path, number, "private-key PEM header", line.strip()))
        if AWS_KEY_ID.search(line):
            findings.append(Finding(path, number, "AWS access key id", line.strip()))
        for match in KEY_VALUE.finditer(line):
            if not _REFERENCE_KEYS.match(match.group("key")) and _literal(match.group("value")):
                findings.append(Finding(path, number, f"literal value for '{match.group('key')}'", line.strip()))
    return findings


def scan_paths(paths: list[Path], suffixes: tuple[str, ...] = (".yaml", ".yml", ".json", ".md", ".env", ".txt")) -> list[Finding]:
    """Findings in every file under ``paths`` (folders are walked) whose suffix is in ``suffixes``."""
    findings: list[Finding] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if f.suffix in suffixes:
                findings.extend(scan_text(f.read_text(errors="replace"), str(f)))
    return findings
