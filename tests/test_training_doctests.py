"""The docstring examples of the training modules run as written."""
import doctest
import importlib

import pytest

MODULES = ["augment", "config", "data", "digits", "evaluate", "finetune", "recipe", "run_record",
           "strategy"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"keras_resnest.training.{name}")
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
