"""The package's import graph: no circles, imports point down the layers, and
no model family uses another family's private names.

Every module of `keras_sparse_moe` is parsed with `ast` (no Keras import):
all its imports count, including those inside functions, so a function-level
import cannot hide a loop.
"""

import ast
import os

import pytest

# Backend-independent (tf.data / NumPy / Python): runs once, under TensorFlow.
pytestmark = pytest.mark.single_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "keras_sparse_moe"

# Layers of the package, bottom first: a module may import its own
# subpackage and anything of a lower layer (or a different subpackage of the
# same layer), never a higher one.
LAYERS = {
    "version": 0,
    "_quiet_tensorflow": 0,
    "_cli_backend": 0,
    "_api": 7,  # the public names that `import keras_sparse_moe` re-exports
    "utils": 0,
    "distribution": 1,
    "layers": 2,
    "data": 2,
    "profiling": 3,
    "profile": 3,
    "presets": 4,
    "models": 5,
    "recipes": 6,
    "export": 6,
    "convert": 6,
    "upcycle": 6,
    "callbacks": 6,
    "": 7,  # the package itself (`import keras_sparse_moe`), which imports all above
    "cli": 8,
}
# Scripts run with `python -m`: on top, and imported by no module.
ENTRY_POINTS = {
    "keras_sparse_moe.export._convert",
}
ENTRY_LAYER = 8


def package_modules():
    """{module name: file path} of every module of the package."""
    modules = {}
    for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(directory, file)
            name = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
            modules[name.removesuffix(".__init__")] = path
    return modules


def imports_of(name, path, modules):
    """[(imported module, line, imported names)] of one module: the package's
    modules it imports anywhere (top level or inside functions)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    is_package = path.endswith("__init__.py")
    found = []

    def resolve(dotted):
        parts = dotted.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.append((resolve(alias.name), node.lineno, ()))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:  # `from package import submodule`
                    found.append((submodule, node.lineno, ()))
                else:
                    found.append((resolve(base), node.lineno, (alias.name,)))
    return [(target, line, names) for target, line, names in found if target and target != name]


@pytest.fixture(scope="module")
def graph():
    modules = package_modules()
    return modules, {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module):
    if module in ENTRY_POINTS:
        return ENTRY_LAYER
    top = module.split(".")[1] if "." in module else ""
    if top not in LAYERS:
        raise AssertionError(
            f"{module} is in no layer of tests/test_import_graph.py; add its subpackage "
            "to LAYERS."
        )
    return LAYERS[top]


def find_cycle(edges):
    """One import circle as a list of modules (first == last), or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_function_level_imports(graph):
    _, imports = graph
    # keras_sparse_moe.cli imports most of its dependencies inside functions.
    assert "keras_sparse_moe.presets" in {target for target, _, _ in imports["keras_sparse_moe.cli"]}


def test_no_import_circle(graph):
    _, imports = graph
    edges = {name: {target for target, _, _ in found} for name, found in imports.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_imports_point_down_the_layers(graph):
    _, imports = graph
    wrong = []
    for name, found in sorted(imports.items()):
        for target, line, _ in found:
            same_subpackage = name.split(".")[:2] == target.split(".")[:2] and "." in target
            if target in ENTRY_POINTS:
                wrong.append(f"{name}:{line} imports the script {target}")
            elif not same_subpackage and layer_of(target) > layer_of(name):
                wrong.append(
                    f"{name}:{line} (layer {layer_of(name)}) imports {target} "
                    f"(layer {layer_of(target)})"
                )
    assert not wrong, "imports pointing up:\n" + "\n".join(wrong)


def test_no_private_names_across_model_families(graph):
    _, imports = graph
    families = "keras_sparse_moe.models."

    def family(module):
        parts = module.split(".")
        return parts[2] if module.startswith(families) and len(parts) > 3 else None

    wrong = []
    for name, found in sorted(imports.items()):
        for target, line, names in found:
            if family(target) is None or family(target) == family(name):
                continue
            private = [n for n in names if n.startswith("_")]
            if target.split(".")[-1].startswith("_") and not target.endswith("__init__"):
                private.append(target)
            if private:
                wrong.append(f"{name}:{line} imports {private} from {target}")
    assert not wrong, "private names used across model families:\n" + "\n".join(wrong)
