"""The package's layout, checked from its imports: the tiers the README's Layout section names, no import
circle, imports inside functions only for the measured-costly libraries, no private name used across modules,
no module far over 600 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from utils.config import ROOT

PACKAGE = ROOT / "utils"
TIERS = [  # from the bottom: a module may import from its own tier and the ones before it, never after
    ("utils", "utils.config", "utils.outputs"),
    ("utils.evaluation",),
    ("utils.data",),
    ("utils.models",),
    ("utils.posteriors",),
    ("utils.explain",),
    ("utils.run",),
    ("utils.chapters",),
    ("utils.findings", "utils.site", "utils.report", "utils.bench"),
]
LAZY = ("laplace", "torchvision", "papermill", "nbconvert", "nbformat")  # inside functions: 1.1-1.5 s each (README)
MAX_LINES = 620


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _tier(module: str) -> int:
    best = None
    for i, prefixes in enumerate(TIERS):
        for pre in prefixes:
            inside = module == pre or (pre != "utils" and module.startswith(pre + "."))  # "utils": the face only
            if inside and (best is None or len(pre) > best[1]):
                best = (i, len(pre))
    assert best is not None, f"{module} is in no tier of tests/test_layout.py (and of the README's Layout)"
    return best[0]


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The package modules an ImportFrom brings in (a submodule where a name is one, else the module)."""
    if node.level:
        base = module.split(".")
        if not MODULES[module].name == "__init__.py":
            base = base[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("utils"):
        return []
    out = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
    return [m for m in out if m in MODULES]


def _imports(module: str):
    """(top-level package imports, imports inside functions as (line, library))."""
    tree = ast.parse(MODULES[module].read_text())
    top = set(tree.body) | {n for s in tree.body if isinstance(s, ast.If) for n in s.body}  # `if TYPE_CHECKING:`
    edges, inner = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            targets = _resolve(module, node)
            lib = node.module or ""
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name in MODULES]
            lib = node.names[0].name
        else:
            continue
        if node in top:
            edges |= set(targets)
        else:
            inner.append((node.lineno, "utils" if getattr(node, "level", 0) or targets else lib))
    return edges, inner


GRAPH = {m: _imports(m)[0] for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_up_a_tier(module):
    up = sorted(t for t in GRAPH[module] if _tier(t) > _tier(module))
    assert not up, f"{module} (tier {_tier(module)}) imports {up} from a tier above it"


def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if t == m or (MODULES[t].name == "__init__.py" and m.startswith(t + ".")):
                continue  # a package's face re-exports its own modules
            if state.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_inside_functions_only_for_costly_libraries(module):
    bad = [(line, lib) for line, lib in _imports(module)[1] if lib.split(".")[0] not in LAZY]
    assert not bad, f"{module}: imports inside functions at {bad}; move them to the top of the module"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module(module):
    tree = ast.parse(MODULES[module].read_text())
    aliases = {}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            targets = _resolve(module, node)
            for a, target in zip(node.names, targets if len(targets) == len(node.names) else [None] * len(node.names)):
                if a.name.startswith("_") and (node.level or (node.module or "").startswith("utils")):
                    bad.append(f"from {node.module} import {a.name}")
                if target is not None and target.endswith("." + a.name):
                    aliases[a.asname or a.name] = target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    aliases[a.asname or a.name.split(".")[0]] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{node.value.id}.{node.attr}")
    assert not bad, f"{module} uses private names of other modules: {sorted(set(bad))}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_far_over_600_lines(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines: split it"


def test_the_tiers_check_catches_an_upward_import_and_a_circle():
    """The checks above are not vacuous: a chapter module sits above the run, the run above the library, and a
    module outside every listed package is in no tier."""
    with pytest.raises(AssertionError, match="in no tier"):
        _tier("utils.somewhere_new")
    assert _tier("utils.chapters.calibration") > _tier("utils.run") > _tier("utils.posteriors.base")
    assert "utils.posteriors" in GRAPH["utils.run"] and "utils.run" not in GRAPH["utils.posteriors.base"]
    assert len(GRAPH) > 40 and sum(map(len, GRAPH.values())) > 80
