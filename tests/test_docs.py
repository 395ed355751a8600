"""The documentation: the MkDocs site (`mkdocs.yml`, `docs/`) and README.md.

* The site builds with `mkdocs build --strict`, so a broken link, a missing anchor or an API
  entry (`::: name`) that does not resolve fails the suite.
* Every ```python block of the site and of the README runs in a fresh Python process, in a
  temporary directory, as a reader would paste it. A block that downloads weights carries
  `<!-- offline: imagenet MODEL... hf OWNER/NAME... -->` on the line before its fence and runs
  against local stand-ins: the Keras cache holds those models' converted ImageNet weights
  (random ones, the file `weights="imagenet"` and the presets read after a download), and the
  Hub stand-in (tests/helpers/hf_hub_standin.py, on HF_ENDPOINT) serves those repositories as
  timm does. Only a block that truly cannot run here carries `<!-- skip: REASON -->` (it
  needs the internet or a GPU); it is reported as skipped with that reason.
* The built pages, not only the build's exit code, are checked: no text in angle brackets
  (`hf://<owner>/<name>`) was taken for an HTML tag and lost, and every parameter and return
  table of the API reference has its Type column filled (the house style writes
  `name (type): meaning.`, which griffe reads).
* bash and console blocks are not executed (they install packages, start servers or train for
  minutes); each `keras-resnest <command>` they name must be a real subcommand.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARKER = re.compile(r"^<!--\s*skip:\s*(?P<reason>.+?)\s*-->$")
OFFLINE_MARKER = re.compile(r"^<!--\s*offline:\s*(?P<needs>.+?)\s*-->$")
FENCE = re.compile(r"^(?P<ticks>`{3,})(?P<lang>[\w-]*)\s*$")
# The elements the built pages may hold: any other start tag is text in angle brackets that the
# browser would swallow (`hf://<owner>/<name>` shows as `hf:///`).
HTML_ELEMENTS = set("""
a abbr article aside b blockquote body br button code col colgroup dd del details div dl dt em
footer form h1 h2 h3 h4 h5 h6 head header hr html i img input label li link main meta nav ol
option p path pre script section select small span strong style sub summary sup svg table
tbody td template textarea tfoot th thead title tr ul
""".split())
# API entries whose Type column is still empty: keras_resnest.beam is being reworked elsewhere
# (its handler keeps the older "name: type. meaning." style for now).
UNTYPED_ENTRIES = {"keras_resnest.beam.model_handler.ResNeStModelHandler"}
# A block runs in a fresh interpreter that imports TensorFlow and builds a small model.
BLOCK_TIMEOUT_S = 600


def code_blocks(path):
    """`(line, language, code, skip reason or None, offline needs)` of each fenced block of a
    markdown file; the needs are `{"imagenet": [model, ...], "hf": [repo, ...]}` (empty lists
    without an `offline:` marker).

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
            offline = OFFLINE_MARKER.match(previous)
            blocks.append((start + 1, language, "\n".join(body) + "\n",
                           marker["reason"] if marker else None,
                           offline_needs(offline["needs"] if offline else "")))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"{path}: the fence opened on line {opened[0] + 1} never closes"
    return blocks


def offline_needs(text):
    """`"imagenet resnest50 hf timm/resnest50d.in1k"` -> {"imagenet": [...], "hf": [...]}."""
    needs, kind = {"imagenet": [], "hf": []}, None
    for word in text.split():
        if word in needs:
            kind = word
        elif kind is None:
            raise ValueError(f"offline marker {text!r}: expected 'imagenet' or 'hf' before "
                             f"{word!r}")
        else:
            needs[kind].append(word)
    return needs


def markdown_files():
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def python_blocks(paths):
    return [pytest.param(path, line, code, reason, needs, id=f"{path.name}:{line}")
            for path in paths for line, language, code, reason, needs in code_blocks(path)
            if language == "python"]


SITE_BLOCKS = python_blocks(sorted(DOCS.glob("*.md")))
README_BLOCKS = python_blocks([ROOT / "README.md"])


@pytest.fixture(scope="session")
def imagenet_files(tmp_path_factory):
    """`model -> path` of random converted ImageNet weights, made once per session: what
    `weights="imagenet"` finds in the Keras cache after its download and conversion."""
    folder = tmp_path_factory.mktemp("imagenet_weights")
    made = {}

    def weights_file(model_name):
        if model_name not in made:
            import keras_resnest
            from keras_resnest.weights import pretrained

            entry = pretrained.PRETRAINED_FILES[model_name]
            made[model_name] = folder / entry.converted_filename
            keras_resnest.create_model(model_name, weights=None).save_weights(made[model_name])
        return made[model_name]

    return weights_file


@pytest.fixture(scope="session")
def hub_repos():
    """`repo -> files` of timm-style repositories (config.json and model.safetensors of the
    official model with random weights), made once per session."""
    made = {}

    def repo_files(repo):
        if repo not in made:
            import safetensors.torch

            from keras_resnest.models.configs import resolve_model_name

            from tests.helpers import torch_reference as ref

            architecture = repo.split("/", 1)[1].split(".")[0]
            model = ref.build_randomized(resolve_model_name(architecture))
            made[repo] = {"config.json": json.dumps({"architecture": architecture,
                                                     "num_classes": 1000}).encode(),
                          "model.safetensors": safetensors.torch.save(model.state_dict())}
        return made[repo]

    return repo_files


def run_block(path, line, code, reason, needs, tmp_path, request):
    if reason is not None:
        pytest.skip(f"{path.name}:{line} is marked: {reason}")
    keras_home = tmp_path / "keras_home"
    if needs["imagenet"]:
        from keras_resnest.weights import pretrained

        (keras_home / pretrained.CACHE_SUBDIR).mkdir(parents=True)
        for model_name in needs["imagenet"]:
            source = request.getfixturevalue("imagenet_files")(model_name)
            os.link(source, keras_home / pretrained.CACHE_SUBDIR / source.name)
    hub = None
    if needs["hf"]:
        from tests.helpers.hf_hub_standin import HubStandIn

        repo_files = request.getfixturevalue("hub_repos")
        hub = HubStandIn({repo: {"main": repo_files(repo)} for repo in needs["hf"]})
        request.addfinalizer(hub.stop)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_HOME=str(keras_home),
               CUDA_VISIBLE_DEVICES="")
    env.pop("KERAS_BACKEND", None)  # an example that needs another backend sets it itself
    if needs["imagenet"]:
        # Nothing is downloaded: a file missing from the cache fails the block at once.
        env["KERAS_RESNEST_WEIGHTS_URL"] = str(tmp_path / "no_mirror")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert result.returncode == 0, (
        f"the python block at {path.name}:{line} failed (exit {result.returncode}):\n"
        f"{result.stderr[-3000:]}")
    if hub is not None:
        for repo in needs["hf"]:
            assert any(repo in r["path"] for r in hub.requests), f"{repo} was never requested"


class BuiltPage(HTMLParser):
    """What the checks read from a built page: its start tags, and each table with the API
    entry (the id of the last h2/h3 heading with a dotted id) it belongs to."""

    def __init__(self):
        super().__init__()
        self.tags, self.tables, self.entry, self.cell = set(), [], None, None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        ident = dict(attrs).get("id") or ""
        if tag in ("h2", "h3") and "." in ident:
            self.entry = ident
        if tag == "table":
            self.tables.append((self.entry, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th") and self.tables:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def read_page(path):
    page = BuiltPage()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def empty_type_cells(page):
    """`(entry, row name)` of every row with an empty Type column in the page's tables."""
    empty = []
    for entry, rows in page.tables:
        if rows and "Type" in rows[0]:
            column = rows[0].index("Type")
            empty += [(entry, row[0]) for row in rows[1:] if not row[column]]
    return empty


def test_the_page_checks_see_what_they_look_for(tmp_path):
    page = tmp_path / "page.html"
    page.write_text('<h3 id="m.f">f</h3><p>weights="hf://<owner>/<name>"</p>'
                    "<table><tr><th>Name</th><th>Type</th></tr><tr><td>x</td><td></td></tr>"
                    "<tr><td>y</td><td><code>int</code></td></tr></table>", encoding="utf-8")
    built = read_page(page)
    assert built.tags - HTML_ELEMENTS == {"owner", "name"}
    assert empty_type_cells(built) == [("m.f", "x")]


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
    pages = {path.relative_to(tmp_path / "site"): read_page(path)
             for path in sorted((tmp_path / "site").rglob("*.html"))}
    lost = {str(path): sorted(page.tags - HTML_ELEMENTS) for path, page in pages.items()
            if page.tags - HTML_ELEMENTS}
    assert lost == {}, f"text in angle brackets taken for HTML tags (write it in backticks): {lost}"
    untyped = [cell for cell in empty_type_cells(pages[Path("api/index.html")])
               if cell[0] not in UNTYPED_ENTRIES]
    assert untyped == [], f"API parameters without a type (`name (type): meaning.`): {untyped}"


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
        "<!-- skip: needs a GPU -->", "```python", "a = 1", "```", "",
        "````markdown", "```python", "not a block", "```", "````", "",
        "<!-- offline: imagenet resnest50 resnest101 hf timm/resnest50d.in1k -->",
        "```python", "b = 2", "```"]), encoding="utf-8")
    none = {"imagenet": [], "hf": []}
    assert code_blocks(page) == [
        (2, "python", "a = 1\n", "needs a GPU", none),
        (6, "markdown", "```python\nnot a block\n```\n", None, none),
        (13, "python", "b = 2\n", None, {"imagenet": ["resnest50", "resnest101"],
                                          "hf": ["timm/resnest50d.in1k"]})]


@pytest.mark.slow
@pytest.mark.parametrize("path, line, code, reason, needs", SITE_BLOCKS)
def test_site_python_block_runs(path, line, code, reason, needs, tmp_path, request):
    run_block(path, line, code, reason, needs, tmp_path, request)


@pytest.mark.slow
@pytest.mark.parametrize("path, line, code, reason, needs", README_BLOCKS)
def test_readme_python_block_runs(path, line, code, reason, needs, tmp_path, request):
    run_block(path, line, code, reason, needs, tmp_path, request)


def subcommands():
    import keras_resnest_cli  # noqa: F401  (first: the package then defers Keras)
    from keras_resnest.commands.main import build_parser

    parser = build_parser()
    action = next(action for action in parser._actions
                  if isinstance(action, argparse._SubParsersAction))
    return set(action.choices)


def test_every_keras_resnest_command_in_a_shell_block_exists():
    known = subcommands()
    named = {}
    for path in markdown_files():
        for line, language, code, _, _ in code_blocks(path):
            if language in ("bash", "console", "sh", "shell"):
                for command in re.findall(r"\bkeras-resnest\s+([a-z][\w-]*)", code):
                    named.setdefault(command, f"{path.name}:{line}")
    assert named, "no shell block names a keras-resnest command: is the reader broken?"
    unknown = {command: where for command, where in named.items() if command not in known}
    assert not unknown, (
        f"shell blocks name keras-resnest commands that do not exist; expected one of "
        f"{sorted(known)}; got {unknown}")


# What a docs test cannot stand in for. Weights downloads are not on the list: the stand-ins
# serve them (`offline:` markers).
TRUE_SKIP_REASONS = ("the internet", "a GPU", "a TF-Serving server")


def test_a_block_is_skipped_only_for_what_cannot_run_here():
    skipped = {f"{path.name}:{line}": reason for path in markdown_files()
               for line, language, _, reason, _ in code_blocks(path)
               if language == "python" and reason is not None}
    untrue = {where: reason for where, reason in skipped.items()
              if not any(need in reason for need in TRUE_SKIP_REASONS)}
    assert not untrue, (f"blocks skipped for a reason the tests can stand in for; expected one "
                        f"of {TRUE_SKIP_REASONS} (else an offline: marker); got {untrue}")
