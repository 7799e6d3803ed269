"""The package layering, checked on the source: which package of voicemon may import which.

    domain   ← storage ← service ← jobs ← api ← cli
                          service, jobs ← web ← api
                                         sdk (nothing of ours)    sim → sdk

Read an arrow as "is imported by". ``errors`` (the exception tree), ``clock``, ``settings`` and the top
level (``__version__``) sit beside the layers and may be imported by any of them but ``domain`` and
``sdk`` (``domain`` may use ``errors``). An import inside a function counts like one at the top:
laziness is no way around a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The server's tree and the client distribution's (sdk/): one package, two distributions.
TREES = (ROOT / "src" / "voicemon", ROOT / "sdk" / "src" / "voicemon")

SHARED = {"errors", "clock", "settings", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "domain": {"errors"},
    "storage": {"domain", "errors", "settings"},
    "service": {"domain", "storage"} | SHARED,
    "jobs": {"domain", "storage", "service"} | SHARED,
    "web": {"domain", "service", "jobs"} | SHARED,
    "api": {"domain", "service", "jobs", "web"} | SHARED,
    "cli": {"domain", "service", "jobs", "api", "sdk", "sim"} | SHARED,
    "sdk": set(),
    "sim": {"sdk"},
}
# The only modules of ``api`` that ``cli`` may use: the app factory and the server that runs it.
API_SURFACE_FOR_CLI = {"voicemon.api", "voicemon.api.server"}


def _relative(path: Path) -> Path:
    tree = next(t for t in TREES if path.is_relative_to(t))
    return path.relative_to(tree)


def _package_of(path: Path) -> str:
    parts = _relative(path).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found if name == "voicemon" or name.startswith("voicemon.")]


def _modules() -> list[Path]:
    return sorted(p for tree in TREES for p in tree.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(_relative(p)))
def test_a_module_imports_only_what_its_layer_may(path: Path) -> None:
    package = _package_of(path)
    if package not in ALLOWED:
        return  # the top-level modules: errors, clock, settings, __init__
    allowed = ALLOWED[package] | {package}
    wrong = []
    for name in _imports(path):
        parts = name.split(".")
        target = parts[1] if len(parts) > 1 else "__init__"
        if target not in allowed:
            wrong.append(name)
        elif package == "cli" and target == "api" and name not in API_SURFACE_FOR_CLI:
            wrong.append(f"{name} (the CLI uses api only through {sorted(API_SURFACE_FOR_CLI)})")
    assert wrong == [], f"{_relative(path)} ({package}) may not import {wrong}"


def test_every_package_is_placed_in_a_layer() -> None:
    packages = {p.name for t in TREES for p in t.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself can fail: a storage import in the domain is found."""
    module = tmp_path / "bad.py"
    module.write_text("from voicemon.storage import events\n\ndef f():\n    import voicemon.api.render\n")
    assert _imports(module) == ["voicemon.storage", "voicemon.api.render"]
