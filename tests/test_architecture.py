"""Dependencies flow one way: core -> hub / export / training -> command line and demo.

Every module's imports are read with `ast` (those inside functions too) and checked against the
layers:

* core: `keras_resnest` itself (layers, models, weights, preprocessing, quantization, ...);
* hub, export, training, beam: each built on the core only, never on one another;
* command line and demo: the `commands/` folder (installed as `keras_resnest.commands`), the
  console-script module `keras_resnest_cli` and the `__main__` modules, free to import
  everything.

Also: `keras_resnest.weights` does not import the model builder (the callers pass a model or a
builder); no imports form a cycle, those inside functions included (a cycle hidden in a
function still ties the modules together: neither can be read, tested or moved alone); and
no file (of the package, the tests, the benchmarks or digit_tasks) imports another module's
`_private` name, or reads one through an imported module (`recipe._walk_layers`): a name
that a sibling uses is public and loses its underscore. `test_the_checks_see_what_they_look_for`
plants a violation of each rule in a synthetic package and shows that the check finds it.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each installed package lives in the repository (setup.py's package_dir).
PACKAGE_DIRS = {"keras_resnest": "keras_resnest", "keras_resnest.export": "export",
                "keras_resnest.training": "training", "keras_resnest.commands": "commands"}
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


def _target(name, modules=MODULES):
    """The module an imported dotted name refers to: itself, or the nearest enclosing module
    (`from keras_resnest.models import create_model` -> keras_resnest.models)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module, top_level_only=False, modules=MODULES):
    """The package's modules that `module` imports (at module level only, if asked).

    Args:
        module (str): A module name of `modules`.
        top_level_only (bool): Only the imports run when the module is imported (not those
            inside functions and classes). Defaults to False.
        modules (dict): {module name: source file}. Defaults to the package's.
    """
    tree = ast.parse(modules[module].read_text(encoding="utf-8"))
    package = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
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
        found.update(target for target in (_target(name, modules) for name in names)
                     if target is not None)
    found.discard(module)
    return found


def layer_of(module):
    # By folder: commands/ (installed as keras_resnest.commands), plus the entry points.
    if (module == "keras_resnest_cli" or module == "keras_resnest.commands"
            or module.startswith("keras_resnest.commands.") or module.endswith(".__main__")):
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


def private_imports_of(path, module=None, modules=MODULES):
    """`(line, "module._name")` for each private name of another package module that the file
    at `path` imports (`from keras_resnest.x import _name`) or reads through an imported module
    (`x._name`).

    Args:
        path (Path): The Python file.
        module (str or None): The file's own module name, if it is one of `modules` (its own
            private names are its own; relative imports are resolved from it). Defaults to
            None.
        modules (dict): {module name: source file}. Defaults to the package's.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = None
    if module is not None:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    bound = {}  # local name -> the package module it names
    found = []

    def private(name):
        return name.startswith("_") and not name.startswith("__")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    bound[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                elif base in modules and base != module and private(alias.name):
                    found.append((node.lineno, f"{base}.{alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if not isinstance(value, ast.Name) or value.id not in bound:
                continue
            # `keras_resnest.weights.checkpoints._NAME`: the longest prefix that is a module.
            dotted = bound[value.id]
            for part in chain:
                if f"{dotted}.{part}" in modules:
                    dotted = f"{dotted}.{part}"
                    continue
                if private(part) and dotted != module:
                    found.append((node.lineno, f"{dotted}.{part}"))
                break
    return sorted(set(found))


def import_cycles(graph):
    """The strongly connected groups of modules (each a sorted list) of an import graph
    `{module: imported modules}`: every module of a group reaches every other through
    imports, so each group holds at least one cycle (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph.get(module, ()):
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def files_to_check():
    """`(path, module name or None)` of every file whose imports are checked for private names:
    the package's modules, the tests, the benchmarks and digit_tasks."""
    files = [(path, module) for module, path in MODULES.items()]
    for folder in ("tests", "benchmarks", "digit_tasks"):
        files += [(path, None) for path in sorted((ROOT / folder).rglob("*.py"))]
    return files


def test_no_imports_form_a_cycle():
    graph = {module: imports_of(module) for module in MODULES}
    assert import_cycles(graph) == []


def test_no_file_imports_another_modules_private_names():
    found = [f"{path.relative_to(ROOT)}:{line} {name}" for path, module in files_to_check()
             for line, name in private_imports_of(path, module)]
    assert found == [], "private names used outside their module (drop the underscore):\n" + (
        "\n".join(found))


def test_the_checks_see_what_they_look_for(tmp_path):
    """A synthetic package with one violation of each rule: the checks must report them."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # a <-> b only through an import inside a function; c stands apart.
    (package / "a.py").write_text("import os\n_hidden = 1\n\ndef f():\n"
                                  "    from pkg import b\n    return b\n")
    (package / "b.py").write_text("from pkg.a import f\n")
    (package / "c.py").write_text("from pkg.a import _hidden\nfrom pkg import a as alias\n"
                                  "from . import b\n\ndef g():\n    return alias._hidden, a_\n")
    modules = {"pkg": package / "__init__.py",
               **{f"pkg.{name}": package / f"{name}.py" for name in "abc"}}
    graph = {module: imports_of(module, modules=modules) for module in modules}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]
    top_level = {module: imports_of(module, top_level_only=True, modules=modules)
                 for module in modules}
    assert import_cycles(top_level) == []  # what the module-level-only check missed
    assert private_imports_of(package / "c.py", "pkg.c", modules) == [
        (1, "pkg.a._hidden"), (6, "pkg.a._hidden")]
    # A module's own private names, and public ones of others, are fine.
    assert private_imports_of(package / "a.py", "pkg.a", modules) == []
    assert private_imports_of(package / "b.py", "pkg.b", modules) == []
    # A file outside the package (a test) is held to the same rule.
    outside = tmp_path / "test_x.py"
    outside.write_text("import pkg.a\n\ndef test():\n    assert pkg.a._hidden\n")
    assert private_imports_of(outside, None, modules) == [(4, "pkg.a._hidden")]
