"""One model registry: every command and `create_model` accept the same names and aliases.

`resnest50d` (timm's name of resnest50) is accepted everywhere and `resnest51` refused everywhere
with the registry's one-line message, before any model is built. The heavy step of each command
is replaced by one that records the model name it was given and stops the command.
"""
import re
from pathlib import Path

import pytest

import keras_resnest
from keras_resnest.commands import main as cli
from keras_resnest.models import ALIASES, MODEL_CONFIGS, list_models, resolve_model_name

ROOT = Path(__file__).resolve().parents[1]


class Reached(Exception):
    """Raised by a stand-in for a command's model build: validation let the name through."""

    def __init__(self, model_name):
        super().__init__(model_name)
        self.model_name = model_name



def unknown_message(name):
    with pytest.raises(ValueError) as error:
        resolve_model_name(name)
    return str(error.value)


def test_names_and_aliases_come_from_one_table():
    assert list_models() == sorted(MODEL_CONFIGS)
    assert set(ALIASES.values()) <= set(MODEL_CONFIGS)
    assert not set(ALIASES) & set(MODEL_CONFIGS)
    for name in list_models():
        assert resolve_model_name(name) == name
    assert resolve_model_name("resnest50d") == "resnest50"
    assert resolve_model_name("resnest50d_4s2x40d.in1k") == "resnest50_fast_4s2x40d"  # timm tag


def test_the_weights_tables_are_derived_from_the_rows():
    # One row per model (models/configs.py): the files, repositories and aliases follow it.
    from keras_resnest.weights import hf_hub, pretrained

    for name, config in MODEL_CONFIGS.items():
        entry = pretrained.PRETRAINED_FILES[name]
        assert (entry.filename, entry.base_url) == (config.weights_file, config.weights_url)
        assert hf_hub.HUB_REPOS.get(name) == config.hub_repo
        assert all(ALIASES[alias] == name for alias in config.aliases)
    assert sorted(ALIASES) == sorted(a for c in MODEL_CONFIGS.values() for a in c.aliases)


def test_unknown_name_message_names_what_is_valid():
    message = unknown_message("resnest51")
    assert message.startswith("unknown model 'resnest51' (did you mean 'resnest50'")
    assert "\n" not in message
    for name in [*MODEL_CONFIGS, *ALIASES]:
        assert name in message


def test_create_model_accepts_aliases_and_refuses_unknown_names():
    model = keras_resnest.create_model("resnest50d", weights=None, input_shape=(32, 32, 3))
    assert model.name == "resnest50"  # built (and named) as the model the alias stands for
    with pytest.raises(ValueError) as error:
        keras_resnest.create_model("resnest51", weights=None)
    assert str(error.value) == unknown_message("resnest51")


@pytest.fixture
def commands(tmp_path, monkeypatch):
    """argv (without --model) of each command, its heavy step replaced by `Reached`."""
    from PIL import Image

    from keras_resnest.commands import convert as convert_cli
    from keras_resnest.commands import predict as predict_cli
    from keras_resnest.commands import train as train_cli

    def stop(name_of):
        def stand_in(*args, **kwargs):
            raise Reached(name_of(*args, **kwargs))
        return stand_in

    monkeypatch.setattr(convert_cli, "convert_checkpoint", stop(lambda source, name, out: name))
    monkeypatch.setattr(predict_cli, "load_predict_model", stop(lambda name, args: name))
    # The command resolves the name on the config it builds (TrainConfig.resolved()).
    build_config = train_cli.config_from_args
    monkeypatch.setattr(train_cli, "config_from_args",
                        stop(lambda args: build_config(args).resolved().model_name))
    monkeypatch.setattr(keras_resnest, "create_model", stop(lambda name, **_: name))  # export

    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40)).save(image)
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    return {
        "convert": ["convert", str(checkpoint), "-o", str(tmp_path / "out.weights.h5")],
        "predict": ["predict", str(image)],
        "train": ["train", "--dataset", "digits", "-o", str(tmp_path / "run")],
        "export": ["export", "--format", "tflite", "--weights", "none",
                   "-o", str(tmp_path / "out.tflite")],
    }


@pytest.mark.parametrize("command", ["convert", "predict", "train", "export"])
def test_every_command_accepts_an_alias(commands, command):
    with pytest.raises(Reached) as reached:
        cli.main([*commands[command], "--model", "resnest50d"])
    assert reached.value.model_name == "resnest50"


@pytest.mark.parametrize("command", ["convert", "predict", "train", "export"])
def test_every_command_refuses_an_unknown_name_with_the_same_line(commands, command, capsys):
    # A `Reached` escaping here would mean the command went on to build the model.
    assert cli.main([*commands[command], "--model", "resnest51"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"keras-resnest {command}: error: {unknown_message('resnest51')}\n"


def _table_rows(page, columns):
    """The rows of `page`'s markdown table that start with a model name, as tuples of cells."""
    text = (ROOT / page).read_text(encoding="utf-8")
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in text.splitlines() if re.match(r"^\| resnest\w+ \|", line)]
    assert rows and all(len(row) == columns for row in rows), page
    return rows


def test_the_docs_tables_are_the_rows():
    # docs/weights.md: file, timm names and Hub repository of each model, in the rows' order.
    expected = [[name, f"`{config.weights_file}`",
                 ", ".join(f"`{alias}`" for alias in config.aliases) or "-",
                 f"`hf://{config.hub_repo}`" if config.hub_repo else "not on the Hub"]
                for name, config in MODEL_CONFIGS.items()]
    assert _table_rows("docs/weights.md", 4) == expected
    # docs/getting-started.md: every model once, at its evaluation size.
    sizes = {row[0]: int(row[3]) for row in _table_rows("docs/getting-started.md", 5)}
    assert sizes == {name: config.default_size for name, config in MODEL_CONFIGS.items()}
