"""The project's modules import each other without a cycle, and no project import hides
in a function to dodge one (a lazy import of a heavy third-party library is fine)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("sidecar", "webhook", "certs", "oomdump")


def project_imports() -> tuple[dict[str, set[str]], list[str]]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    nested: list[str] = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            hits = {t for t in targets if t in modules and t != name}
            graph[name] |= hits
            if hits and node.col_offset > 0:
                nested.append(f"{name}:{node.lineno} imports {sorted(hits)}")
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycle() -> None:
    graph, _ = project_imports()
    assert find_cycle(graph) is None


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_project_import_inside_a_function_of_the_watcher() -> None:
    _, nested = project_imports()
    assert [line for line in nested if line.startswith("sidecar")] == []
