"""No import cycles among our modules (vrlhf, labeler, reward_model, tuner, loop), read from the source with ast.

Both module-level imports and imports inside functions count: a function-level import that closes a cycle is still
two modules that need each other (the factory in reward_model/base.py importing the models that import base), and
it fails, or half-works, as soon as someone moves it to the top of the file. Not counted: imports under
`if __name__ == "__main__":` (they run only when the module is the program, as `__main__`, never while it is being
imported) and under `if TYPE_CHECKING:` (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vrlhf", "labeler", "reward_model", "tuner", "loop")


def our_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def never_imported_with_the_module(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` and `if TYPE_CHECKING:` blocks."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    if isinstance(test, ast.Name | ast.Attribute):
        return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"
    return (isinstance(test, ast.Compare) and getattr(test.left, "id", None) == "__name__"
            and getattr(test.comparators[0], "value", None) == "__main__")


def imported_names(module: str, path: Path, tree: ast.AST, modules: dict) -> list[str]:
    """Every name that `module` imports anywhere: `from a import b` is the module a.b where there is one, else a
    (a package's submodule imports its sibling, not the package's __init__)."""
    names, todo = [], [tree]
    while todo:
        node = todo.pop()
        if never_imported_with_the_module(node):
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            names += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        todo += ast.iter_child_nodes(node)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path, ast.parse(path.read_text()), modules):
            while name not in modules and "." in name:  # `a.b.attr` -> a.b
                name = name.rsplit(".", 1)[0]
            if name in modules and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_function_level_cycle_and_resolves_names():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "vrlhf.errors" in graph["vrlhf.config"]  # module level
    assert "tuner.trl_backend" in graph["tuner.train"]  # inside a function
    assert "vrlhf.shapes_grammar" in graph["vrlhf.shapes"]  # from a import (b, c)


def test_no_import_cycles_among_our_modules():
    graph = import_graph()
    found = cycles(graph)
    detail = ["  " + " | ".join(f"{a} -> {', '.join(sorted(graph[a] & set(c)))}" for a in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(detail)
