"""The floors of the house (shared/DESIGN.md), read from the source with `ast`: no module is imported here.

    pipeline/    CLI, config, paths, runner, stages, run store       may import components/ and serving/
    components/  one module per stage                                 may import serving/, and of pipeline/
                                                                      only the shared error base
    serving/     TF Serving's contract, client, local server          imports neither, but the shared error base

Every import counts, also one inside a function (imported lazily to keep `--help` fast is still a dependency),
and no module may import another that imports it back, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("pipeline", "components", "serving")
SHARED_ERROR_BASE = "pipeline.errors"  # the one module of pipeline/ that the floors below may import


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((REPO_ROOT / package).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    # `from pipeline import paths` also names the package `pipeline` itself: only the submodule is meant.
    return {m for m in found if not any(other.startswith(m + ".") for other in found) or m in _leaves(known)}


def _leaves(known: set[str]) -> set[str]:
    return {m for m in known if not any(o.startswith(m + ".") for o in known)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read(graph):
    assert "pipeline.cli" in graph and "serving.model_registry" in graph and "components.train" in graph
    assert "pipeline.runner" in graph["pipeline.commands.run"]


def _up(graph: dict[str, set[str]], floor: str, above: tuple[str, ...]) -> list[str]:
    """Imports from modules of `floor` into the floors `above` it, but the shared error base."""
    return sorted(f"{m} -> {t}" for m, targets in graph.items() if _in(m, floor) for t in targets
                  if any(_in(t, a) for a in above) and t not in (SHARED_ERROR_BASE, "pipeline"))


def test_serving_imports_neither_components_nor_pipeline_but_the_error_base(graph):
    assert _up(graph, "serving", ("components", "pipeline")) == []


def test_components_import_nothing_from_pipeline_but_the_error_base(graph):
    """Parameter types (components.params, components.score.options), the dataset table and the atomic-write
    helper live in components/; pipeline/config.py composes them, never the other way round."""
    assert _up(graph, "components", ("pipeline",)) == []


def test_no_import_cycles(graph):
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_a_layer_violation(tmp_path, monkeypatch):
    """The checks above can fail: a fake tree with serving -> components, components -> pipeline modules other
    than the error base (a plain import, a lazy one, a relative one) and a two-module cycle trips them; the
    error base itself does not."""
    import tests.pipeline.test_layering as layering

    for package, files in {
        "serving": {"__init__.py": "", "a.py": "from components import b\nfrom pipeline.errors import E\n",
                    "d.py": "import pipeline.config\n"},
        "components": {"__init__.py": "", "b.py": "def f():\n    from components import c\n",
                       "c.py": "import components.b\nfrom pipeline.errors import E\n",
                       "e.py": "def g():\n    from pipeline import config\n",
                       "f.py": "from ..pipeline.atomic import atomic_write\n"},
        "pipeline": {"__init__.py": "", "errors.py": "class E(Exception): ...\n", "config.py": "",
                     "atomic.py": ""},
    }.items():
        (tmp_path / package).mkdir()
        for name, text in files.items():
            (tmp_path / package / name).write_text(text)
    monkeypatch.setattr(layering, "REPO_ROOT", tmp_path)
    modules = layering._modules()
    fake = {name: layering._imports(name, path, set(modules)) for name, path in modules.items()}
    assert layering._up(fake, "serving", ("components", "pipeline")) == ["serving.a -> components.b",
                                                                          "serving.d -> pipeline.config"]
    with pytest.raises(AssertionError, match="serving.a -> components.b"):
        layering.test_serving_imports_neither_components_nor_pipeline_but_the_error_base(fake)
    assert layering._up(fake, "components", ("pipeline",)) == ["components.e -> pipeline.config",
                                                               "components.f -> pipeline.atomic"]
    with pytest.raises(AssertionError, match="components.e -> pipeline.config"):
        layering.test_components_import_nothing_from_pipeline_but_the_error_base(fake)
    with pytest.raises(AssertionError, match="components.b -> components.c -> components.b"):
        layering.test_no_import_cycles(fake)
