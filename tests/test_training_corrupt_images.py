"""`keras-resnest train` on a class folder with damaged JPEGs: the decoder's own lines stay off
the terminal and each file that cannot be decoded is named in one line."""
import io
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from keras_resnest.quiet_start import filtered_stderr

from tests.helpers.training_runs import TRAIN, train_env

DECODER_TEXT = ("JPEG library", "Corrupt JPEG", "Premature end", "jpeg_mem.cc")


def _cut_in_its_image_data(data):
    """A JPEG whose headers are whole (the listing's header check passes it) and whose image
    data stops after 20 bytes: the decoder in the input pipeline fails on it."""
    return data[:data.find(b"\xff\xda") + 20]


def _jpeg_bytes(seed, size=32):
    array = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.slow
def test_train_names_an_undecodable_jpeg_once_without_decoder_chatter(tmp_path):
    for split, count in (("train", 4), ("val", 2)):
        for label, name in enumerate(("cat", "dog")):
            folder = tmp_path / "photos" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i}.jpg").write_bytes(_jpeg_bytes(10 * label + i))
    data = _jpeg_bytes(99, size=64)
    cut = tmp_path / "photos" / "train" / "cat" / "cut.jpg"
    cut.write_bytes(_cut_in_its_image_data(data))  # libjpeg: "Premature end of JPEG data"
    inside = data.find(b"\xff\xda") + 200  # a marker inside the scan: "Corrupt JPEG data"
    damaged = tmp_path / "photos" / "train" / "dog" / "damaged.jpg"
    damaged.write_bytes(data[:inside] + b"\xff\xc4\x00\x02" + data[inside + 4:])
    # 10 training files, 5 batches of 4: two passes, so the cut file is read twice.
    result = subprocess.run(
        [*TRAIN[:5], "--data", str(tmp_path / "photos"), "--epochs", "1", "--batch-size", "4",
         "--steps-per-epoch", "5", "--image-size", "32",
         "-o", str(tmp_path / "run")],
        capture_output=True, text=True, env=train_env(), timeout=600)
    assert result.returncode == 0, result.stderr
    assert not any(text in result.stderr for text in DECODER_TEXT), result.stderr
    named = [line for line in result.stderr.splitlines() if "cannot decode" in line]
    # The damaged file decodes (what libjpeg recovered): only the cut one is named, once.
    assert named == [f"warning: {cut}: cannot decode the image; skipped"], result.stderr


def test_filter_drops_decoder_lines_and_keeps_everything_else(capfd):
    with filtered_stderr(once=("; skipped",)):
        os.write(2, b"Improper call to JPEG library in state 201\n"
                    b"Corrupt JPEG data: premature end of data segment\n"
                    b"E0000 00:00:1.5   7 jpeg_mem.cc:339] Premature end of JPEG data.\n"
                    b"warning: a.jpg: bad; skipped\nwarning: a.jpg: bad; skipped\n"
                    b"E0000 00:00:1.5   7 op_kernel.cc:1] INVALID_ARGUMENT: Invalid JPEG data\n"
                    b"Traceback (most recent call last):\n")
    assert capfd.readouterr().err.splitlines() == [
        "warning: a.jpg: bad; skipped",
        "E0000 00:00:1.5   7 op_kernel.cc:1] INVALID_ARGUMENT: Invalid JPEG data",
        "Traceback (most recent call last):",
    ]


def test_validation_names_each_of_adjacent_undecodable_files(tmp_path, capfd):
    from keras_resnest.training import data

    for label, name in enumerate(("cat", "dog")):
        for split in ("train", "val"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in (0, 2):
                (folder / f"{i}.jpg").write_bytes(_jpeg_bytes(10 * label + i))
    bad = [tmp_path / "val" / "cat" / f"1_{i}.jpg" for i in range(2)]  # sorted between 0 and 2
    for path in bad:
        path.write_bytes(_cut_in_its_image_data(_jpeg_bytes(5)))
    loaded = data.folder_data(str(tmp_path))
    capfd.readouterr()
    batches = list(data.validation_batches(loaded, batch_size=8, image_size=16))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 16, 16, 3)]
    named = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert named == [f"warning: {path}: cannot decode the image; skipped" for path in bad]
