"""What the documentation quotes from code or a benchmark, compared with its owner (as
tests/test_hf_hub.py compares the Hub table with `HUB_REPOS`): the extras and what needs them
against setup.py and the commands' messages, the warm-up rule against the training run, the
version, the conversion figures against their benchmark table, `make bench` against the
benchmark's defaults, the decompression bomb against the tests' bomb, and every source path a
page names."""
import ast
import re
import types
from pathlib import Path

import pytest

import keras_resnest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def page(name):
    return (ROOT / name).read_text(encoding="utf-8")


def setup_call():
    """The keyword arguments of `setup(...)` in setup.py that are literals or names of
    module-level literals (extras are lists built from constants)."""
    tree = ast.parse(page("setup.py"))
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    return {keyword.arg: keyword.value for keyword in call.keywords}


def extras():
    return {ast.literal_eval(key) for key in setup_call()["extras_require"].keys}


def test_the_extras_table_is_setup_py_s():
    table = re.findall(r"^\| (`\w+`(?:, `\w+`)*) \| .+ \|$", page("docs/getting-started.md"),
                       re.MULTILINE)
    listed = {name for row in table for name in re.findall(r"`(\w+)`", row)}
    # `test` is the suite's own extra (Development), not a user's.
    assert listed == extras() - {"test"}
    readme = re.search(r"Extras \(((?:`\w+`,?\s*)+)\)", page("README.md"))
    assert set(re.findall(r"`(\w+)`", readme[1])) == extras() - {"test"}


# Each command that needs an extra, the module that says so when it is missing, and the extra.
NEEDS_AN_EXTRA = {"predict-batch": ("commands/predict_batch.py", "beam"),
                  "export --format onnx": ("export/onnx_export.py", "onnx"),
                  "convert --check": ("commands/convert.py", "reference")}


def test_what_a_plain_install_lacks_is_what_the_commands_ask_for():
    for command, (module, extra) in NEEDS_AN_EXTRA.items():
        assert f'keras-resnest[{extra}]' in page(module), (command, module)
    for name in ("README.md", "docs/getting-started.md"):
        claim = " ".join(page(name).split())
        stated = dict(re.findall(r"`([a-z-]+(?: --[a-z]+(?: [a-z]+)?)?)` \((?:[^()]*?, the )?"
                                 r"`?(\w+)`? ?(?:extra)?\)", claim[claim.index("except three"):]
                                 [:300]))
        assert stated == {command: extra for command, (_, extra) in NEEDS_AN_EXTRA.items()}, (
            name, stated)
    # No other command module asks for an extra.
    others = [*ROOT.glob("commands/*.py"), *ROOT.glob("training/*.py")]
    asking = {str(path.relative_to(ROOT)) for path in others
              if "keras-resnest[" in path.read_text(encoding="utf-8")}
    assert asking == {module for module, _ in NEEDS_AN_EXTRA.values()} & asking


def test_the_warm_up_rule_is_the_training_run_s(monkeypatch):
    """fine-tuning.md's cap and its example, through `training.run.build` itself."""
    from keras_resnest.training import recipe, run
    from keras_resnest.training.loop import TrainConfig

    text = " ".join(page("docs/fine-tuning.md").split())
    claim = re.search(r"`--warmup-epochs (\d+)`, capped at a fifth of the run's steps: the "
                      r"`--epochs (\d+)` run above warms up for (\d+) epochs", text)
    assert claim, "fine-tuning.md no longer states the warm-up cap"
    warmup, epochs, effective = map(int, claim.groups())
    assert f"--epochs {epochs} \\" in page("docs/fine-tuning.md")  # "the run above"
    assert TrainConfig.warmup_epochs == warmup
    steps_per_epoch = 50

    class Stop(Exception):
        pass

    def schedule(peak, total_steps, warmup_steps):
        raise Stop(total_steps, warmup_steps)

    monkeypatch.setattr(recipe, "warmup_cosine_schedule", schedule)
    config = types.SimpleNamespace(epochs=epochs, warmup_epochs=warmup, optimizer="sgd")
    strategy = types.SimpleNamespace(scope=lambda: __import__("contextlib").nullcontext())
    state = types.SimpleNamespace(config=config, steps=steps_per_epoch, strategy=strategy,
                                  build_model=lambda: None, replicas=1, peak_lr=0.1)
    with pytest.raises(Stop) as stopped:
        run.build(state)
    total_steps, warmup_steps = stopped.value.args
    assert total_steps == epochs * steps_per_epoch
    assert warmup_steps == effective * steps_per_epoch


def test_the_version_is_the_package_s():
    assert ast.literal_eval(setup_call()["version"]) == keras_resnest.__version__
    for path in PAGES:
        for version in re.findall(r"keras-resnest (\d+\.\d+\.\d+)", path.read_text("utf-8")):
            assert version == keras_resnest.__version__, path.name


def test_the_conversion_figures_are_the_benchmark_s():
    section = page("docs/benchmarks.md").split("## Checkpoint conversion")[1].split("\n## ")[0]
    rows = re.findall(r"^\| [^|]+ \| [\d.]+ MB \| ([\d.]+) \| \d+ MB \(([\d.]+)x\) \|$",
                      section, re.MULTILINE)
    assert len(rows) == 3
    seconds = sorted(float(s) for s, _ in rows)
    ratio = max(float(r) for _, r in rows)
    claim = re.search(r"converts in ([\d.]+)-([\d.]+) s with a peak of about ([\d.]+)x",
                      " ".join(page("docs/weights.md").split()))
    assert claim and (float(claim[1]), float(claim[2])) == (round(seconds[0], 1),
                                                           round(seconds[-1], 1))
    assert float(claim[3]) == round(ratio, 1)


def test_make_bench_is_what_the_page_says():
    makefile = page("Makefile")
    recipe = re.search(r"^bench:.*\n\t(.+)$", makefile, re.MULTILINE)[1]
    assert recipe == "$(PY) -m benchmarks.inference"  # no options: the benchmark's defaults
    # Read from the benchmark's source: tests and benchmarks import nothing of each other.
    defaults = argument_defaults(ROOT / "benchmarks" / "inference.py")
    claim = re.search(r"`make bench` runs it with its defaults, (\d+) rounds of ([\d.]+) s",
                      " ".join(page("docs/benchmarks.md").split()))
    assert claim and (int(claim[1]), float(claim[2])) == (defaults["--rounds"],
                                                          defaults["--seconds"])


def argument_defaults(path):
    """{option: default} of the literal `add_argument(..., default=...)` calls of a script."""
    defaults = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
                and node.args and isinstance(node.args[0], ast.Constant)):
            for keyword in node.keywords:
                if keyword.arg == "default" and isinstance(keyword.value, ast.Constant):
                    defaults[node.args[0].value] = keyword.value.value
    return defaults


def test_the_decompression_bomb_is_the_tests_bomb():
    from tests.helpers.serving_contract_probe import png_bomb

    claim = re.search(r"A ([\d.]+) MB PNG of (\d+)x\2 pixels",
                      " ".join(page("docs/export.md").split()))
    assert claim, "export.md no longer describes the bomb"
    assert round(len(png_bomb(int(claim[2]))) / 1e6, 1) == float(claim[1])
    assert f"a {claim[1]} MB PNG can hold {claim[2]}x{claim[2]} pixels" in page(
        "export/saved_model.py")


def test_every_source_path_a_page_names_exists():
    named = {}
    for path in PAGES:
        for source in re.findall(r"`((?:keras_resnest|export|training|tests|benchmarks)/"
                                 r"[\w/.-]+\.py)`", path.read_text(encoding="utf-8")):
            named.setdefault(source, path.name)
    assert named, "no page names a source file: is the pattern broken?"
    missing = {source: where for source, where in named.items() if not (ROOT / source).is_file()}
    assert not missing, f"pages name files that do not exist: {missing}"
