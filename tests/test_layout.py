"""The library's shape: no import cycle between its modules (imports inside functions and entry points count
too), and the model modules import neither the engine, its configuration nor the profiles."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "bnext_lib"


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            if node.module:  # "from . import x" imports x (its package is already being imported)
                out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_models_do_not_import_the_engine():
    """Nor the run configuration or the notebooks' profiles: a model module is a model and its builder."""
    graph = _graph()
    engine = {"bnext_lib.train", "bnext_lib.runs", "bnext_lib.cli", "bnext_lib.report", "bnext_lib.config",
              "bnext_lib.profiles", "bnext_lib.study", "bnext_lib.pool"}
    for m, deps in graph.items():
        if m.startswith("bnext_lib.models"):
            assert not deps & engine, f"{m} imports {deps & engine}"
