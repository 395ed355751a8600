"""The documentation: the MkDocs site (`mkdocs.yml`, `docs/`) and README.md.

* The site builds with `mkdocs build --strict`, so a broken link, a missing anchor or an API
  entry (`::: name`) that does not resolve fails the suite.
* Every ```python block of the site and of the README runs in a fresh Python process, in a
  temporary directory, as a reader would paste it. A block that cannot run offline on a CPU
  carries `<!-- skip: REASON -->` on the line before its fence (it downloads weights, needs a
  GPU or a running server); it is reported as skipped with that reason.
* bash and console blocks are not executed (they install packages, start servers or train for
  minutes); each `keras-resnest <command>` they name must be a real subcommand.
"""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARKER = re.compile(r"^<!--\s*skip:\s*(?P<reason>.+?)\s*-->$")
FENCE = re.compile(r"^(?P<ticks>`{3,})(?P<lang>[\w-]*)\s*$")
# A block runs in a fresh interpreter that imports TensorFlow and builds a small model.
BLOCK_TIMEOUT_S = 600


def code_blocks(path):
    """`(line, language, code, skip reason or None)` of each fenced block of a markdown file.

    Args:
        path: Path. The markdown file.

    A block opened with N backticks closes only at a line of at least N backticks, so a page
    can show a fenced example inside a longer fence (that inner example is not a block).
    """
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    opened = None  # (line index, ticks, language) of the open fence
    body = []
    for index, line in enumerate(lines):
        fence = FENCE.match(line)
        if opened is None:
            if fence:
                opened = (index, len(fence["ticks"]), fence["lang"])
                body = []
            continue
        if fence and not fence["lang"] and len(fence["ticks"]) >= opened[1]:
            start, _, language = opened
            previous = next((lines[i].strip() for i in range(start - 1, -1, -1)
                             if lines[i].strip()), "")
            marker = SKIP_MARKER.match(previous)
            blocks.append((start + 1, language, "\n".join(body) + "\n",
                           marker["reason"] if marker else None))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"{path}: the fence opened on line {opened[0] + 1} never closes"
    return blocks


def markdown_files():
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def python_blocks(paths):
    return [pytest.param(path, line, code, reason, id=f"{path.name}:{line}")
            for path in paths for line, language, code, reason in code_blocks(path)
            if language == "python"]


SITE_BLOCKS = python_blocks(sorted(DOCS.glob("*.md")))
README_BLOCKS = python_blocks([ROOT / "README.md"])


def run_block(path, line, code, reason, tmp_path):
    if reason is not None:
        pytest.skip(f"{path.name}:{line} is marked: {reason}")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_HOME=str(tmp_path / "keras_home"),
               CUDA_VISIBLE_DEVICES="")
    env.pop("KERAS_BACKEND", None)  # an example that needs another backend sets it itself
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert result.returncode == 0, (
        f"the python block at {path.name}:{line} failed (exit {result.returncode}):\n"
        f"{result.stderr[-3000:]}")


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-3000:]}"
    api_page = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("create_model", "decode_predictions", "read_state_dict", "ResNeStBackbone",
                 "TrainConfig", "export_saved_model", "quantize_aware"):
        assert f'id="{name}"' in api_page or f'.{name}"' in api_page, (
            f"the API reference has no entry for {name}")


def test_a_broken_link_fails_the_strict_build(tmp_path):
    # The build above passing means nothing unless a broken page fails it.
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in DOCS.glob("*.md"):
        (docs / page.name).write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    with open(docs / "index.md", "a", encoding="utf-8") as index:
        index.write("\nSee [the missing page](no-such-page.md).\n")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    config = config.replace("paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr


def test_the_block_reader_finds_markers_and_nested_fences(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "<!-- skip: needs download -->", "```python", "a = 1", "```", "",
        "````markdown", "```python", "not a block", "```", "````", "",
        "```python", "b = 2", "```"]), encoding="utf-8")
    assert code_blocks(page) == [(2, "python", "a = 1\n", "needs download"),
                                 (6, "markdown", "```python\nnot a block\n```\n", None),
                                 (12, "python", "b = 2\n", None)]


@pytest.mark.slow
@pytest.mark.parametrize("path, line, code, reason", SITE_BLOCKS)
def test_site_python_block_runs(path, line, code, reason, tmp_path):
    run_block(path, line, code, reason, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path, line, code, reason", README_BLOCKS)
def test_readme_python_block_runs(path, line, code, reason, tmp_path):
    run_block(path, line, code, reason, tmp_path)


def subcommands():
    import keras_resnest_cli  # noqa: F401  (first: the package then defers Keras)
    from keras_resnest.cli import build_parser

    parser = build_parser()
    action = next(action for action in parser._actions
                  if isinstance(action, argparse._SubParsersAction))
    return set(action.choices)


def test_every_keras_resnest_command_in_a_shell_block_exists():
    known = subcommands()
    named = {}
    for path in markdown_files():
        for line, language, code, _ in code_blocks(path):
            if language in ("bash", "console", "sh", "shell"):
                for command in re.findall(r"\bkeras-resnest\s+([a-z][\w-]*)", code):
                    named.setdefault(command, f"{path.name}:{line}")
    assert named, "no shell block names a keras-resnest command: is the reader broken?"
    unknown = {command: where for command, where in named.items() if command not in known}
    assert not unknown, (
        f"shell blocks name keras-resnest commands that do not exist; expected one of "
        f"{sorted(known)}; got {unknown}")
