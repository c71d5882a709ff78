"""The import graph: the library never imports the Beam jobs or the export, and no cycles."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("autorisk_tf", "beam", "export")


def _modules() -> dict[str, str]:
    """`{dotted module name: path}` of every module of the three packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module to the project modules it imports anywhere (function bodies too)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import module` depends on that module; `from module
                # import name` on the module.
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    targets.add(child if child in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of its modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_dependencies_point_one_way():
    graph = import_graph()
    assert "autorisk_tf.contract" in graph and "beam.preprocess" in graph
    upward = [f"{source} -> {target}" for source, targets in graph.items()
              for target in targets
              if (source.startswith("autorisk_tf") and target.startswith(("beam", "export")))
              or (source.startswith("beam") and target.startswith("export"))]
    assert not upward, f"imports against the layering: {upward}"


def test_no_import_cycle():
    assert _cycle(import_graph()) is None, f"import cycle: {_cycle(import_graph())}"


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_training_loop_knows_no_task_by_module():
    graph = import_graph()
    assert "autorisk_tf.tasks.bag_of_ids" in graph
    named = sorted(t for t in graph["autorisk_tf.training.loop"]
                   if t.startswith("autorisk_tf.tasks."))
    assert named in ([], ["autorisk_tf.tasks.base"]), f"the loop imports task modules: {named}"
