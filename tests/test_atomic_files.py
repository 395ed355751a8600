"""Atomic writes: the final file is complete or absent, and has the mode of a plain new file.

Every output (a .tflite file, a TF-Serving package's configs and directories, training's
history.csv / model.keras) goes through `keras_resnest.atomic_files`; under a umask of 022 or
027 each must be as readable as `open(path, "w")` / `os.makedirs` would make it, not 0600/0700.
"""
import doctest
import os
import stat

import pytest

from keras_resnest import atomic_files
from keras_resnest.atomic_files import renamed_on_success, written_atomically


def test_success_renames_and_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out.bin"
    with renamed_on_success(tmp_path / "out.part", final) as temporary:
        temporary.write_bytes(b"complete")
    assert final.read_bytes() == b"complete"

    with pytest.raises(RuntimeError, match="interrupted"):
        with renamed_on_success(tmp_path / "out2.part", tmp_path / "out2.bin") as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_written_atomically_keeps_extensions_and_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "model.weights.h5"
    with written_atomically(final) as temporary:
        # Writers such as keras.Model.save check the extension of the path they are given.
        assert temporary.endswith(".weights.h5") and os.path.dirname(temporary) == str(tmp_path)
        assert os.path.isfile(temporary)
        with open(temporary, "w") as handle:
            handle.write("complete")
    assert final.read_text() == "complete"

    with pytest.raises(RuntimeError, match="interrupted"):
        with written_atomically(final) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half")
            raise RuntimeError("interrupted")
    assert final.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.weights.h5"]


def test_docstring_example():
    assert doctest.testmod(atomic_files).failed == 0


# --- permissions: those of a plain new file, under the umask ---------------------------------

@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_file_mode(folder):
    """The mode `open(path, "w")` gives a new file here, under the current umask."""
    reference = folder / "plain-reference"
    reference.write_text("")
    found = mode(reference)
    reference.unlink()
    return found


def plain_directory_mode(folder):
    """The mode `os.makedirs` gives a new directory here, under the current umask."""
    reference = folder / "plain-reference-dir"
    os.makedirs(reference)
    found = mode(reference)
    reference.rmdir()
    return found


def test_written_file_has_the_mode_of_a_plain_new_file(tmp_path, umask):
    with written_atomically(tmp_path / "notes.txt") as temporary:
        with open(temporary, "w") as handle:
            handle.write("done")
    assert mode(tmp_path / "notes.txt") == plain_file_mode(tmp_path) == 0o666 & ~umask


def test_export_file_write_has_the_mode_of_a_plain_new_file(tmp_path, umask):
    """`write_file_atomically`: every .tflite file, the TFLite report."""
    from keras_resnest.export.output_paths import write_file_atomically

    write_file_atomically(tmp_path / "model.tflite", b"\x00flatbuffer")
    write_file_atomically(tmp_path / "report.json", "{}")
    expected = plain_file_mode(tmp_path)
    assert mode(tmp_path / "model.tflite") == mode(tmp_path / "report.json") == expected


@pytest.mark.slow
def test_serving_package_files_and_directories_have_plain_modes(tmp_path, umask, monkeypatch):
    """models.config, batching.config, the model and version directories and their files."""
    from keras_resnest.export import saved_model, serving

    def write_saved_model(model, directory, **_):
        # Stands in for the SavedModel (TensorFlow writes it with open()); the packaging
        # around it is what is tested: staging directory, rename, config files.
        (directory / "saved_model.pb").write_bytes(b"graph")
        return 32

    monkeypatch.setattr(saved_model, "write_saved_model", write_saved_model)
    output = tmp_path / "models"
    version_dir = serving.export_serving_package(None, output, "tiny", version=1)

    file_mode, directory_mode = plain_file_mode(tmp_path), plain_directory_mode(tmp_path)
    for name in (serving.MODELS_CONFIG, serving.BATCHING_CONFIG):
        assert mode(output / name) == file_mode, name
    assert mode(version_dir / "saved_model.pb") == file_mode
    for directory in (output, output / "tiny", version_dir):
        assert mode(directory) == directory_mode, directory

    # Replacing the version keeps the modes (the old one is moved aside, the new renamed in).
    serving.export_serving_package(None, output, "tiny", version=1, overwrite=True)
    assert mode(version_dir) == directory_mode
    assert mode(output / serving.MODELS_CONFIG) == file_mode


def test_training_outputs_have_the_mode_of_a_plain_new_file(tmp_path, umask):
    """The training loop's writers: history.csv, evaluation.json, model.keras, weights."""
    from keras_resnest.atomic_files import write_atomically, write_json
    from keras_resnest.training import run

    run.write_history(str(tmp_path / "history.csv"), [])
    write_json(str(tmp_path / "evaluation.json"), {"top1": 1.0})

    def save(path):  # as keras.Model.save: the writer opens the (existing) temporary path
        assert path.endswith(".keras")
        with open(path, "wb") as handle:
            handle.write(b"zip")

    write_atomically(str(tmp_path / "model.keras"), save)
    expected = plain_file_mode(tmp_path)
    for name in ("history.csv", "evaluation.json", "model.keras"):
        assert mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "evaluation.json", "history.csv", "model.keras"]
