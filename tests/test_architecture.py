"""The package layout's rules (docs/ARCHITECTURE.md), checked on the source: every import, those
inside functions too, points down the layers; no import cycle; no private name crosses a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

# lower number = lower layer; a module imports only its own package or packages below it
LAYERS = {"config": 0, "io": 1, "data": 2, "encoder": 3, "evaluation": 4, "autoencoders": 5, "release": 6,
          "run": 7, "cli": 8, "__main__": 8}
# inside run/: steps → context → derived / publish / links → stages → local
RUN = {"steps": 0, "context": 1, "derived": 2, "publish": 2, "links": 2, "stages": 3, "local": 4}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path):
    """(line, imported module, imported names) of every import in the file, nested ones included."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base, [a.name for a in node.names]


def _mrnet_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (REPO / "mrnet").rglob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for _, target, names in _imports(path):
            if not target.startswith("mrnet"):
                continue
            for n in names or [None]:  # `from mrnet.x import y` may name a module y
                full = f"{target}.{n}" if n and f"{target}.{n}" in modules else target
                if full in modules and full != name:
                    graph[name].add(full)
    return graph


def _rank(module: str) -> tuple[int, int]:
    parts = module.split(".")[1:]
    if not parts:
        return (-1, 0)  # the mrnet package itself (its __init__ imports nothing)
    layer = LAYERS[parts[0]]
    return layer, (RUN.get(parts[1], 0) if parts[0] == "run" and len(parts) > 1 else 0)


def test_every_mrnet_module_is_in_a_layer():
    unknown = sorted(m for m in _mrnet_graph() if m != "mrnet" and m.split(".")[1] not in LAYERS)
    assert unknown == [], f"add these to a package (docs/ARCHITECTURE.md): {unknown}"


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in _mrnet_graph().items():
        for target in targets:
            same_package = module.split(".")[:2] == target.split(".")[:2]
            if _rank(target) > _rank(module) and not (same_package and module.split(".")[1] != "run"):
                upward.append(f"{module} imports {target}")
    assert upward == [], "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_inside_mrnet():
    graph, state, cycles = _mrnet_graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_from_mrnet():
    found = []
    for folder in ("mrnet", "dags", "bench", "tests", "plugins"):
        for path in (REPO / folder).rglob("*.py"):
            for line, target, names in _imports(path):
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                if target.startswith("mrnet") and (private or any(p.startswith("_") for p in target.split("."))):
                    found.append(f"{path.relative_to(REPO)}:{line}: from {target} import {', '.join(private)}")
    assert found == [], "\n".join(found)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The walkers see nested and relative imports (so the rules above can fail)."""
    probe = REPO / "mrnet" / "io" / "probe_for_test.py"
    try:
        probe.write_text("def f():\n    from mrnet.run.context import _private\n    from ..data import text\n")
        lines = list(_imports(probe))
        assert (2, "mrnet.run.context", ["_private"]) in lines and (3, "mrnet.data", ["text"]) in lines
        assert "mrnet.run.context" in _mrnet_graph()["mrnet.io.probe_for_test"]
        assert _rank("mrnet.run.context") > _rank("mrnet.io.probe_for_test")
    finally:
        probe.unlink()


def test_tests_import_only_helpers_from_tests():
    """Shared fixtures live in conftest.py, shared code in tests/helpers: no test imports another."""
    found = []
    for path in (REPO / "tests").rglob("*.py"):
        for line, target, _ in _imports(path):
            if target == "tests" or (target.startswith("tests.") and not target.startswith("tests.helpers")):
                found.append(f"{path.relative_to(REPO)}:{line}: imports {target}")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("name", ["test_config.py", "test_dags.py", "test_text.py", "test_architecture.py"])
def test_a_test_file_collects_on_its_own(tmp_path, name):
    """`pytest tests/<file>` works alone, from any folder (pyproject's rootdir and pythonpath). Four
    files stand for the kinds there are: importing tests.helpers, importing Airflow, neither."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider",
                          str(REPO / "tests" / name)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "collected" in out.stdout, (out.stdout + out.stderr)[-2000:]


def test_every_package_folder_is_a_regular_package():
    """A folder without __init__.py imports from a checkout but is left out of a built wheel."""
    missing = [str(d.relative_to(REPO)) for d in (REPO / "mrnet").rglob("*") if d.is_dir()
               and d.name != "__pycache__" and not (d / "__init__.py").exists()]
    assert missing == []
