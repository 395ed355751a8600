"""`keras-resnest predict-batch`: Beam's RunInference over many image files.

The main test runs the DirectRunner with two worker processes over about 500 generated images
(24-80 px PNGs and JPEGs), three bad files and, in a subfolder (`**`), a few hundred fuzzed
and odd files (`tests/helpers/odd_images.py`), with a small saved `.keras` model (ResNeSt-14d,
32 px, 10 classes, fixed seeds; untrained: the numbers only have to match single-process
`keras_resnest.predict` and `keras_resnest.images.read_for_eval`). The fast tests check the
one-line errors given before any work.
"""
import doctest
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from keras_resnest.commands.main import main
from keras_resnest.images import read_for_eval
from keras_resnest.predict import load_images

from tests.helpers import odd_images, scratch

SIZE = 32
CLASSES = [f"class_{index}" for index in range(10)]
GOOD_IMAGES = 500
COMMAND = os.path.join(os.path.dirname(sys.executable), "keras-resnest")
BAD_FILES = ("notes.jpg", "empty.png", "truncated.jpg")
FUZZ_PER_FORMAT = 50  # fuzzed files of each claimed format (5 formats), plus the odd files


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """(model file, model, folder, good image paths, bad file paths)."""
    import keras

    import keras_resnest

    with scratch.module_folder(tmp_path_factory, "predict_batch") as root:
        keras.utils.set_random_seed(0)
        model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(SIZE, SIZE, 3),
                                           classes=len(CLASSES))
        model.save(root / "model.keras")
        (root / "class_names.json").write_text(json.dumps(CLASSES))
        folder = root / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        good = []
        for index in range(GOOD_IMAGES):
            height, width = rng.integers(24, 81, size=2)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            path = folder / f"image{index:03d}.{'png' if index % 2 else 'jpg'}"
            Image.fromarray(pixels).save(path)
            good.append(str(path))
        (folder / BAD_FILES[0]).write_text("not an image")
        (folder / BAD_FILES[1]).write_bytes(b"")
        jpeg = (folder / "image000.jpg").read_bytes()
        (folder / BAD_FILES[2]).write_bytes(jpeg[:len(jpeg) // 2])
        bad = [str(folder / name) for name in BAD_FILES]
        yield root / "model.keras", model, folder, good, bad


@pytest.fixture(scope="module")
def fuzz_files(image_files):
    """{path: (image, reason)}: fuzzed and odd files in IMAGES/fuzz, with what the reader makes
    of each (`read_for_eval`, the single-process reference)."""
    folder = image_files[2] / "fuzz"
    folder.mkdir()
    files = [*odd_images.fuzzed_files(FUZZ_PER_FORMAT, seed=29),
             *odd_images.odd_files().items()]
    expected = {}
    for name, data in files:
        path = folder / name
        path.write_bytes(data)
        expected[str(path)] = read_for_eval(str(path), SIZE)
    return expected


def read_jsonl(pattern):
    return [json.loads(line) for path in sorted(glob.glob(pattern))
            for line in open(path, encoding="utf-8")]


def probabilities_of(rows):
    """{path: probabilities in class order} from rows listing all classes."""
    return {row["path"]: np.array([dict(zip(row["labels"], row["scores"]))[name]
                                   for name in CLASSES]) for row in rows}


@pytest.mark.slow
def test_two_worker_processes_match_single_process_predict(image_files, fuzz_files, tmp_path):
    model_file, model, folder, good, bad = image_files
    readable = [path for path, (_, reason) in fuzz_files.items() if reason is None]
    unreadable = {path: reason for path, (_, reason) in fuzz_files.items() if reason is not None}
    assert len(readable) > 50 and len(unreadable) > 50  # the fuzz exercises both outputs
    output = tmp_path / "out" / "predictions"
    result = subprocess.run(
        # "**": the fuzzed files are in a subfolder, which Beam's "*" does not enter.
        [COMMAND, "predict-batch", "--input", str(folder / "**"), "--output", str(output),
         "--weights", str(model_file), "--top", str(len(CLASSES)), "--runner", "DirectRunner",
         "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"predicted   {len(good) + len(readable)} images" in result.stdout, result.stdout
    assert f"unreadable  {len(bad) + len(unreadable)} files" in result.stdout, result.stdout
    # Only the command's own lines: no TensorFlow start-up or Beam log lines from the workers.
    assert len(result.stdout.splitlines()) == 2 and result.stderr == "", result.stderr[-3000:]

    rows = read_jsonl(f"{output}-?????-of-?????.jsonl")
    paths = [row["path"] for row in rows]
    assert sorted(paths) == sorted(good + readable)  # each readable file once, no bad one
    expected = model.predict(load_images(good, SIZE), verbose=0)
    got = probabilities_of(rows)
    np.testing.assert_allclose(np.stack([got[path] for path in good]), expected, atol=1e-5)
    expected = model.predict(np.stack([fuzz_files[path][0] for path in readable]), verbose=0)
    np.testing.assert_allclose(np.stack([got[path] for path in readable]), expected, atol=1e-5)
    for row in rows:  # best first
        assert row["scores"] == sorted(row["scores"], reverse=True)

    # Each bad file once, with the reason the reader gives it alone.
    errors = read_jsonl(f"{output}-errors-*.jsonl")
    assert sorted(error["path"] for error in errors) == sorted([*bad, *unreadable])
    unreadable.update((path, read_for_eval(path, SIZE)[1]) for path in bad)
    assert {error["path"]: error["reason"] for error in errors} == unreadable


@pytest.mark.slow
def test_parquet_rows_and_embeddings(image_files, tmp_path):
    import keras

    model_file, model, folder, good, bad = image_files
    common = ["--input", str(folder / "*"), "--weights", str(model_file)]
    assert main(["predict-batch", *common, "--output", str(tmp_path / "p"), "--format",
                 "parquet", "--top", "3"]) == 0
    table = pq.read_table(glob.glob(str(tmp_path / "p-*.parquet"))).to_pylist()
    expected = model.predict(load_images(good, SIZE), verbose=0)
    assert sorted(row["path"] for row in table) == sorted(good)
    for row in table:
        probabilities = expected[good.index(row["path"])]
        best = np.argsort(-probabilities, kind="stable")[:3]
        assert row["labels"] == [CLASSES[index] for index in best]
        np.testing.assert_allclose(row["scores"], probabilities[best], atol=1e-5)
    assert len(read_jsonl(str(tmp_path / "p-errors-*.jsonl"))) == len(bad)

    assert main(["predict-batch", *common, "--output", str(tmp_path / "e"),
                 "--embeddings"]) == 0
    rows = read_jsonl(str(tmp_path / "e-?????-of-?????.jsonl"))
    features = keras.Model(model.inputs[0], model.get_layer("avgpool").output)
    expected = features.predict(load_images(good, SIZE), verbose=0)
    got = {row["path"]: row["embedding"] for row in rows}
    assert sorted(got) == sorted(good)
    np.testing.assert_allclose(np.array([got[path] for path in good]), expected, atol=1e-5)


def error_line(argv, capsys):
    code = main(["predict-batch", *map(str, argv)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


@pytest.fixture
def one_image(tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "grey.png")
    return ["--input", str(tmp_path / "*.png"), "--output", str(tmp_path / "out")]


@pytest.mark.parametrize("options, expected", [
    (["--runner", "MadeUpRunner"], "--runner MadeUpRunner: expected one of DirectRunner, "
                                   "DataflowRunner, FlinkRunner, SparkRunner"),
    (["--top", "0"], "--top 0: must be >= 1"),
    (["--size", "16"], "--size 16: must be >= 32"),
    (["--format", "csv"], "--format csv: expected one of jsonl, parquet"),
    (["--model", "resnest9000"], "resnest9000"),
])
def test_bad_options_are_one_line_before_any_work(one_image, options, expected, capsys):
    line = error_line([*one_image, "--weights", "none", *options], capsys)
    assert line.startswith("keras-resnest predict-batch: error: ") and expected in line, line


def test_a_glob_matching_nothing_is_one_line(tmp_path, capsys):
    pattern = tmp_path / "missing" / "*.jpg"
    line = error_line(["--input", pattern, "--output", tmp_path / "out"], capsys)
    assert line == (f"keras-resnest predict-batch: error: --input {pattern}: expected a glob "
                    "matching image files, no file matches")


def test_earlier_outputs_stop_the_run_before_the_model_is_loaded(tmp_path, capsys):
    # The input in subfolders, named with "**" as Beam matches it (Python's glob would not).
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "photos" / "cats" / "a.png")
    earlier = [f"out-{index:05d}-of-00004.jsonl" for index in range(4)]
    earlier += ["out-errors-00000-of-00001.jsonl", "out-00000-of-00001.parquet"]
    for name in [*earlier, "out-notes.txt"]:
        (tmp_path / name).write_text("{}\n")
    argv = ["--input", tmp_path / "photos" / "**.png", "--output", tmp_path / "out",
            # A second problem: each gets its line, before any work.
            "--weights", tmp_path / "missing.keras"]
    code = main(["predict-batch", *map(str, argv)])
    lines = capsys.readouterr().err.splitlines()
    named = sorted(str(tmp_path / name) for name in earlier)[:3]
    assert code == 2 and lines == [
        f"keras-resnest predict-batch: error: --output {tmp_path / 'out'}: expected "
        "no outputs of an earlier run there (or --overwrite to remove them first; "
        f"mixed shards would read as one run), found 6 files: {', '.join(named)} and 3 more",
        f"keras-resnest predict-batch: error: --weights {tmp_path / 'missing.keras'}: expected "
        "a .keras model file, no such file"], lines
    assert len(os.listdir(tmp_path)) == len(earlier) + 2  # nothing removed, nothing written


def test_a_failed_run_leaves_neither_earlier_outputs_nor_temp_folders(one_image, tmp_path,
                                                                      monkeypatch):
    from keras_resnest.beam.model_handler import ResNeStModelHandler

    seen = []

    def fail(self, batch, model, inference_args=None):
        seen.extend(os.listdir(tmp_path))  # what the run had written when it failed
        raise RuntimeError("the model failed")

    # The in-process DirectRunner runs the handler here, patched.
    monkeypatch.setattr(ResNeStModelHandler, "run_inference", fail)
    for name in ("out-00000-of-00002.jsonl", "out-00001-of-00002.jsonl",
                 "out-errors-00000-of-00001.jsonl"):
        (tmp_path / name).write_text("{}\n")
    with pytest.raises(Exception, match="the model failed"):
        main(["predict-batch", *one_image, "--overwrite", "--model", "resnest14d", "--weights",
              "none", "--size", str(SIZE)])
    assert any(name.startswith("beam-temp-out-") for name in seen), seen  # cleanup had work
    assert sorted(os.listdir(tmp_path)) == ["grey.png"]


class FakeReadableFile:
    """A matched file as `fileio.ReadMatches` gives it, opening `stream()`."""

    def __init__(self, path, stream):
        self.metadata = type("Metadata", (), {"path": path})()
        self._stream = stream

    def open(self, **_):
        return self._stream()


class CountingStream(io.BytesIO):
    """An in-memory file that counts the bytes read, and may say it cannot seek."""

    def __init__(self, data, seekable=True):
        super().__init__(data)
        self.bytes_read, self._seekable = 0, seekable

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def seekable(self):
        return self._seekable

    def seek(self, *args):
        if not self._seekable:  # as a pipe or a streaming download
            raise io.UnsupportedOperation("seek")
        return super().seek(*args)


def decode(readable_file):
    from keras_resnest.beam.pipeline import DecodeImage

    (output,) = DecodeImage(SIZE).process(readable_file)
    return output


def test_decode_reads_a_file_as_the_reader_does_and_never_raises():
    png = odd_images.encode(odd_images.picture(40, 50), "PNG")
    image, reason = read_for_eval(png, SIZE)
    assert reason is None
    for seekable in (True, False):
        path, got = decode(FakeReadableFile("a.png", lambda: CountingStream(png, seekable)))
        assert path == "a.png"
        np.testing.assert_array_equal(got, image)

    # A large file that is no image: refused from its first bytes, not read whole.
    stream = CountingStream(b"x" * 10_000_000)
    output = decode(FakeReadableFile("big.jpg", lambda: stream))
    assert output.tag == "unreadable" and stream.bytes_read < 100_000, stream.bytes_read
    assert output.value == {"path": "big.jpg", "reason": read_for_eval(b"x" * 100, SIZE)[1]}

    def gone():
        raise PermissionError("[Errno 13] Permission denied: 'gone.jpg'")

    output = decode(FakeReadableFile("gone.jpg", gone))  # anything else: a row, not a failure
    assert output.value == {"path": "gone.jpg", "reason": "cannot read the file ([Errno 13] "
                                                          "Permission denied: 'gone.jpg')"}


def test_other_commands_still_refuse_unknown_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "cat.jpg", "--direct_num_workers=2"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --direct_num_workers=2" in capsys.readouterr().err


def test_without_beam_the_command_names_the_extra(tmp_path):
    # apache_beam hidden as if not installed: `import apache_beam` raises ImportError.
    code = ("import sys; sys.modules['apache_beam'] = None; import keras_resnest_cli; "
            "sys.exit(keras_resnest_cli.main(sys.argv[1:]))")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "grey.png")
    result = subprocess.run(
        [sys.executable, "-c", code, "predict-batch", "--input", str(tmp_path / "*.png"),
         "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and 'pip install "keras-resnest[beam]"' in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == ["grey.png"]  # no output written


def test_the_command_line_does_not_import_beam_until_predict_batch_runs():
    # `keras-resnest --help` stays fast: Beam is imported by the handler only.
    code = ("import sys, keras_resnest_cli; from keras_resnest.commands.main import build_parser; "
            "build_parser().parse_args(['predict-batch', '--help'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--embeddings" in result.stdout, result.stderr[-3000:]
    code = ("import sys, keras_resnest_cli; from keras_resnest.commands.main import build_parser; "
            "build_parser(); print('apache_beam' in sys.modules, 'pyarrow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_the_handler_example_runs():
    from keras_resnest.beam import model_handler

    assert doctest.testmod(model_handler).failed == 0
