"""Dependencies flow one way: core -> hub / export / training -> command line and demo.

Every module's imports are read with `ast` (those inside functions too) and checked against the
layers:

* core: `keras_resnest` itself (layers, models, weights, preprocessing, quantization, ...);
* hub, export, training, beam: each built on the core only, never on one another;
* command line and demo: `keras_resnest_cli`, `keras_resnest.cli`, every `*cli` module and
  `keras_resnest.demo`, free to import everything.

Also: `keras_resnest.weights` does not import the model builder (the callers pass a model or a
builder), and no module-level imports form a cycle.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each installed package lives in the repository (setup.py's package_dir).
PACKAGE_DIRS = {"keras_resnest": "keras_resnest", "keras_resnest.export": "export",
                "keras_resnest.training": "training"}
TOP_LEVEL_MODULES = {"keras_resnest_cli": "keras_resnest_cli.py"}
FEATURE_AREAS = ("hub", "export", "training", "beam")
BUILDER_MODULES = ("keras_resnest", "keras_resnest.models", "keras_resnest.models.resnest")


def find_modules():
    """{module name: source file} of every module of the package, as installed."""
    modules = {name: ROOT / path for name, path in TOP_LEVEL_MODULES.items()}
    for package, directory in PACKAGE_DIRS.items():
        for path in sorted((ROOT / directory).rglob("*.py")):
            parts = list(path.relative_to(ROOT / directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            # keras_resnest's own files never shadow the export/training directories.
            modules.setdefault(name, path)
    return modules


MODULES = find_modules()


def _target(name):
    """The module an imported dotted name refers to: itself, or the nearest enclosing module
    (`from keras_resnest.models import create_model` -> keras_resnest.models)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module, top_level_only=False):
    """The package's modules that `module` imports (at module level only, if asked)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    if top_level_only:  # module-level statements include those under if/try at the top
        nodes = [node for statement in tree.body for node in ast.walk(statement)
                 if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.ClassDef))]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from package import submodule` imports the submodule.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in map(_target, names) if target is not None)
    found.discard(module)
    return found


def layer_of(module):
    if (module == "keras_resnest_cli" or module == "keras_resnest.demo"
            or module.endswith("cli") or module.endswith("__main__")):
        return "cli"
    for area in FEATURE_AREAS:
        if module == f"keras_resnest.{area}" or module.startswith(f"keras_resnest.{area}."):
            return area
    return "core"


def test_the_modules_are_found():
    layers = {layer_of(module) for module in MODULES}
    assert layers == {"core", "cli", *FEATURE_AREAS}
    assert {"keras_resnest.preprocessing", "keras_resnest.export.saved_model",
            "keras_resnest.training.loop", "keras_resnest.hub.backbone"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) == "core"))
def test_core_imports_only_the_core(module):
    outside = {name for name in imports_of(module) if layer_of(name) != "core"}
    assert not outside, f"{module} (core) imports {sorted(outside)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) in FEATURE_AREAS))
def test_feature_areas_import_only_the_core_and_themselves(module):
    own = layer_of(module)
    outside = {name for name in imports_of(module) if layer_of(name) not in ("core", own)}
    assert not outside, f"{module} ({own}) imports {sorted(outside)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES
                                          if m.startswith("keras_resnest.weights")))
def test_weights_do_not_import_the_model_builder(module):
    builder = imports_of(module) & set(BUILDER_MODULES)
    assert not builder, f"{module} imports the model builder through {sorted(builder)}"


def test_no_cycles_among_module_level_imports():
    graph = {module: imports_of(module, top_level_only=True) for module in MODULES}
    state = {}  # module -> "open" while on the current path, "done" after

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
