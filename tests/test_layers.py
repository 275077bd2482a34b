"""The house: imports run only downward through the floors below, never in a circle.

Floors, bottom to top: configs and files; the mesh, shared executables, the tokenizer and the languages; the model
and the data side; generation; post-training (chat format, conversation files, reward, the language verifier);
evaluation, training and serving; the searches and compilers that drive training; the embedded-data builders; the
command line; the demo wing. A package may import its own floor's other packages only where listed (`SIDEWAYS`).
Every import counts, including those inside functions (they are how heavy dependencies load late, not a way around
the house).
"""

from __future__ import annotations

import ast
import collections
import importlib.util

from jobs import ROOT

PACKAGE = ROOT / "sailor2_jax"
FLOORS = [
    {"config", "files"},
    {"sharding", "compiled", "tokenizer", "languages"},
    {"model", "data"},
    {"generate"},
    {"post"},
    {"eval", "train", "serve"},
    {"regmix", "aot"},
    {"embedded"},
    {"commands", "cli"},
    {"demo"},
]
# the entry point finds what it runs: cli.py its commands (and they its PROG), `sailor2-jax demo` the demo wing
SIDEWAYS = {("cli", "commands"), ("commands", "cli"), ("commands", "demo")}
FLOOR = {part: i for i, parts in enumerate(FLOORS) for part in parts}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(f.read_text(encoding="utf-8"))
    return out


def _imports(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """module → the project modules it imports (`from pkg import submodule` counts as the submodule)."""
    edges = collections.defaultdict(set)
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sailor2_jax"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                edges[name] |= subs or {node.module}
            elif isinstance(node, ast.Import):
                edges[name] |= {a.name for a in node.names if a.name in modules}
        edges[name].discard(name)
    return edges


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_part_of_the_package_has_a_floor():
    parts = {_part(m) for m in _modules() if m != "sailor2_jax"}
    assert parts <= FLOOR.keys(), f"give these a floor in FLOORS: {sorted(parts - FLOOR.keys())}"


def test_imports_run_down_the_house():
    up = []
    for module, targets in _imports(_modules()).items():
        for target in targets:
            a, b = _part(module), _part(target)
            if module == "sailor2_jax" or target == "sailor2_jax" or a == b or (a, b) in SIDEWAYS:
                continue
            if FLOOR[b] >= FLOOR[a]:
                up.append(f"{module} → {target} (floor {FLOOR[a]} → {FLOOR[b]})")
    assert not up, "imports that run up or sideways:\n" + "\n".join(sorted(up))


def test_no_import_circles():
    edges = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                circles.append(sorted([v, *component]))

    for v in list(edges):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_every_import_of_the_project_resolves():
    """Every `from sailor2_jax... import name` in the package and the tests names a module and a name that exist,
    the imports inside functions included (they run only when their code does, so a moved module would otherwise
    surface at run time)."""
    import importlib

    missing = []
    for f in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sailor2_jax")):
                continue
            where = f"{f.relative_to(ROOT)}:{node.lineno}"
            try:
                module = importlib.import_module(node.module)
            except ModuleNotFoundError as e:
                missing.append(f"{where}: {e}")
                continue
            for alias in node.names:
                if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                    missing.append(f"{where}: {node.module} has no {alias.name}")
    assert not missing, "\n".join(missing)
