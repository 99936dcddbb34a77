"""The package's shape: no import cycles among gap's modules, and light entry points stay light."""
import ast
import subprocess
import sys

from tests.helpers import ROOT


def module_imports() -> dict[str, set[str]]:
    """Each gap module -> the gap modules it imports (anywhere in it)."""
    graph = {}
    for path in (ROOT / "gap").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gap"):
                # `from gap.memory import arch` imports the submodule gap.memory.arch
                found |= {f"{node.module}.{a.name}" if (ROOT / node.module.replace(".", "/") / f"{a.name}.py")
                          .is_file() else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("gap")}
        graph[name] = found
    return graph


def test_no_import_cycles():
    graph = module_imports()
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert "gap.train" in graph and len(graph) > 30


def test_fetching_data_does_not_import_lightning_or_the_engine():
    code = "import sys, gap.data.fetch, gap.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('lightning', 'torch') or m.startswith('gap.scoring')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
