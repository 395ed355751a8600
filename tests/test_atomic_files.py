"""renamed_on_success: the final file is complete or absent."""
import doctest

import pytest

from keras_resnest import atomic_files
from keras_resnest.atomic_files import renamed_on_success


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


def test_docstring_example():
    assert doctest.testmod(atomic_files).failed == 0
