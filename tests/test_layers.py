"""The layer rules, checked on the source: one `feldspar` namespace, imports only downwards, no cycles.

Layers (docs/architecture.md): the three front ends (app/cli `feldspar.cli`, app/serve
`feldspar.serve`, app/webui `feldspar.webui`) → the app core (the rest of app/, the `feldspar`
package top) → agents, ui → model, retrieval; bench measures the lower layers and is driven by the
app. The core never imports a front end; a front end never imports another one, except that the
CLI starts the server through its two entry modules (`feldspar serve`, `feldspar bench serve`). Every import statement of every
Python file in the repository is read with `ast`, function-level imports included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER_DIRS = {"app": "feldspar", "model": "feldspar.model", "retrieval": "feldspar.retrieval",
              "agents": "feldspar.agents", "ui": "feldspar.ui", "bench": "feldspar.bench"}
# What each layer may import from Feldspar (its own package is always allowed).
ALLOWED = {
    "feldspar.model": set(),
    "feldspar.retrieval": set(),
    "feldspar.agents": {"feldspar.model", "feldspar.retrieval"},
    "feldspar.ui": {"feldspar.agents", "feldspar.model", "feldspar.retrieval"},
    "feldspar.bench": {"feldspar.model", "feldspar.retrieval", "feldspar.agents"},
}
FRONT_ENDS = ("feldspar.cli", "feldspar.serve", "feldspar.webui")
# The only modules one front end may import from another: how `feldspar serve` starts the server.
LAUNCHERS = {"feldspar.cli": {"feldspar.serve.server", "feldspar.serve.run"}}
FORBIDDEN_THIRD_PARTY = {"feldspar.agents": {"torch", "transformers"}}
OLD_TOP_LEVEL = re.compile(r"^\s*(from|import)\s+(app|model|retrieval|agents|ui|bench)(\.|\s|$)", re.M)


def python_files() -> list[Path]:
    skip = {".venv", ".git", "build", "node_modules", ".pytest_cache"}
    return sorted(p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts))


def module_name(path: Path) -> str | None:
    """The installed module name of a file in a layer folder, else None (tests, examples …)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] not in LAYER_DIRS:
        return None
    rest = [p for p in parts[1:] if p != "__init__"]
    return ".".join([LAYER_DIRS[parts[0]], *rest])


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = module_name(path) or ""
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.append((node.lineno, base))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return names


def layer_of(module: str) -> str:
    """The layer a feldspar module belongs to: feldspar.model.x -> feldspar.model; feldspar.cli.root ->
    feldspar.cli (a front end); feldspar.compose -> feldspar (the core)."""
    if module == "feldspar.__main__":
        return "feldspar.cli"  # `python -m feldspar` is the CLI's second door
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("model", "retrieval", "agents", "ui", "bench", "cli", "serve", "webui"):
        return ".".join(parts[:2])
    return "feldspar"


def front_end_violation(layer: str, name: str) -> bool:
    """Whether ``layer`` (the core or a front end) may not import feldspar module ``name``."""
    target = layer_of(name)
    if target not in FRONT_ENDS or target == layer:
        return False
    if layer == "feldspar":
        return True  # the core never imports a front end
    return not any(name == allowed or name.startswith(allowed + ".") for allowed in LAUNCHERS.get(layer, ()))


def violations(files: list[Path] | None = None) -> list[str]:
    found = []
    for path in python_files() if files is None else files:
        own = module_name(path)
        if own is None:
            continue
        layer = layer_of(own)
        for line, name in imported_names(path):
            top = name.split(".")[0]
            if layer in FORBIDDEN_THIRD_PARTY and top in FORBIDDEN_THIRD_PARTY[layer]:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            if top != "feldspar":
                continue
            if layer == "feldspar" or layer in FRONT_ENDS:
                if front_end_violation(layer, name):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {name}")
                continue
            target = layer_of(name) if name != "feldspar" else "feldspar"
            if target != layer and target not in ALLOWED[layer]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {name}")
    return found


def test_lower_layers_import_only_downwards():
    assert violations() == []


def test_no_file_imports_the_old_top_level_packages():
    offenders = []
    for path in python_files() + sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md")):
        for match in OLD_TOP_LEVEL.finditer(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert offenders == []


def module_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in python_files() if module_name(p)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for _, imported in imported_names(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "feldspar":
                edges.add(imported)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("layer", ["feldspar", "feldspar.cli", "feldspar.serve", "feldspar.webui", "feldspar.model", "feldspar.retrieval", "feldspar.agents", "feldspar.bench"])
def test_no_import_cycle_inside_a_layer(layer):
    graph = {m: {e for e in edges if layer_of(e) == layer} for m, edges in module_graph().items() if layer_of(m) == layer}
    assert find_cycle(graph) is None


def test_the_checks_catch_what_they_are_meant_to_catch():
    """The checks can fail: a planted upward import and a planted cycle are both found."""
    graph = {"feldspar.model.a": {"feldspar.model.b"}, "feldspar.model.b": {"feldspar.model.a"}}
    assert find_cycle(graph) == ["feldspar.model.a", "feldspar.model.b", "feldspar.model.a"]
    planted = ROOT / "model" / "_planted_upward_import.py"
    planted.write_text("from feldspar.compose import build_engine\nfrom ..retrieval import loaders\n", encoding="utf-8")
    try:
        found = [v.split(": ", 1)[1] for v in violations([planted])]
    finally:
        planted.unlink()
    assert found == ["feldspar.model imports feldspar.compose", "feldspar.model imports feldspar.compose.build_engine",
                     "feldspar.model imports feldspar.retrieval", "feldspar.model imports feldspar.retrieval.loaders"]


def test_the_front_end_rules_catch_a_planted_violation():
    """The core importing a front end, and one front end importing another, are both found; the
    CLI's launcher imports of the server are not."""
    planted = {ROOT / "app" / "_planted_core.py": "from feldspar.cli.root import console\nfrom .webui import jobs\n",
               ROOT / "app" / "serve" / "_planted_serve.py": "import feldspar.webui.services\nfrom ..cli import root\n",
               ROOT / "app" / "cli" / "_planted_cli.py": "from feldspar.serve.run import serve_forever\n"
                                                          "from feldspar.serve.endpoints import create_app\n"}
    for path, text in planted.items():
        path.write_text(text, encoding="utf-8")
    try:
        found = [v.split(": ", 1)[1] for v in violations(sorted(planted))]
    finally:
        for path in planted:
            path.unlink()
    assert found == [
        "feldspar imports feldspar.cli.root", "feldspar imports feldspar.cli.root.console",
        "feldspar imports feldspar.webui", "feldspar imports feldspar.webui.jobs",
        "feldspar.cli imports feldspar.serve.endpoints", "feldspar.cli imports feldspar.serve.endpoints.create_app",
        "feldspar.serve imports feldspar.webui.services", "feldspar.serve imports feldspar.cli", "feldspar.serve imports feldspar.cli.root",
    ]


def error_classes(folder: str) -> set[str]:
    tree = ast.parse((ROOT / folder / "errors.py").read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


@pytest.mark.parametrize("folder", ["model", "retrieval"])
def test_lower_layer_errors_word_no_cli_flags_or_variables(folder):
    """Lower layers name remedies by key; the app words them (feldspar.errors.REMEDIES)."""
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+|FELDSPAR_[A-Z_]+|HF_HUB_OFFLINE|`feldspar [a-z]")
    errors = error_classes(folder)
    offenders = []
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                    node.func.id in errors or node.func.id.endswith("Error")):
                if flag.search(text := ast.unparse(node)):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:100]}")
    assert offenders == []
