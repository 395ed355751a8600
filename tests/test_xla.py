"""The XLA path on TensorFlow: `keras-resnest train --jit-compile` and `model.compile(
jit_compile=True)` compile our layers and give the plain step's numbers.

The comparisons train a few steps from the same initial weights at a small learning rate and
hold the XLA run to float32 rounding: XLA fuses and reorders the float32 arithmetic, so the
runs differ by rounding only, which a few steps of SGD carry but do not blow up (at lr 0.1 and
batch 4, BatchNorm over 4 values amplifies it by orders of magnitude within 3 steps).
Weight updates are compared against the largest update of the model
(`tests.helpers.train_steps.update_error`).
"""
import argparse

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.train_steps import BATCH, CLASSES, STEPS, batch, train_step_run, update_error

SIZE = 32
# Loss and weight updates: XLA against the plain step, relative. Measured (TF 2.21, AVX-512
# CPU): about 1e-6 on both.
TOLERANCE = 1e-5


def _train_step_run(jit_compile, **model_options):
    """(losses, initial weights, final weights)."""
    return train_step_run(SIZE, jit_compile=jit_compile, **model_options)[:3]


@pytest.mark.slow  # two XLA compilations of resnest14d's step
def test_xla_train_step_matches_the_plain_step():
    plain_losses, before, plain = _train_step_run(jit_compile=False)
    xla_losses, xla_before, xla = _train_step_run(jit_compile=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, xla_before))  # the same start
    np.testing.assert_allclose(xla_losses, plain_losses, rtol=TOLERANCE)
    assert update_error(before, plain, xla) < TOLERANCE


@pytest.mark.slow  # one XLA compilation
def test_xla_compiles_dropblock_and_drop_path():
    # Random masks: XLA's generator draws other numbers than TensorFlow's kernels, so this
    # checks that the layers compile and train, not equality.
    losses, before, after = _train_step_run(jit_compile=True, dropblock_rate=0.2,
                                            drop_path_rate=0.2)
    assert np.isfinite(losses).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def _fit_run(jit_compile):
    """The docs' two-phase fit example (docs/fine-tuning.md): per phase, (losses, weights
    before, weights after)."""
    import keras_resnest

    keras.utils.set_random_seed(0)
    images, labels = batch(SIZE)
    images, labels = np.tile(images, (STEPS, 1, 1, 1)), np.tile(labels, (STEPS, 1))
    base = keras_resnest.ResNeSt14(weights=None, include_top=False, pooling="avg",
                                   input_shape=(SIZE, SIZE, 3))
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(base(inputs, training=False))
    model = keras.Model(inputs, outputs)
    phases = []
    for trainable in (False, True):
        base.trainable = trainable
        if trainable:  # phase 2: one step (see the test)
            images, labels = images[:BATCH], labels[:BATCH]
        model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.9),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                      jit_compile=jit_compile)
        before = [v.numpy() for v in model.weights]
        history = model.fit(images, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        phases.append((history.history["loss"], before, [v.numpy() for v in model.weights]))
    return phases


@pytest.mark.slow  # two XLA compilations
def test_fit_with_jit_compile_matches_fit_without():
    (head_loss, head_before, head), (all_loss, all_before, all_plain) = _fit_run(False)
    (xla_head_loss, _, xla_head), (xla_all_loss, _, xla_all) = _fit_run(True)
    # Phase 1 (the head on frozen features): float32 rounding.
    np.testing.assert_allclose(xla_head_loss, head_loss, rtol=TOLERANCE)
    assert update_error(head_before, head, xla_head) < TOLERANCE
    # Phase 2 trains the backbone with BatchNorm in inference mode at its initial statistics,
    # a step that rounding tips: in the plain step alone, input images changed by one float32
    # ulp move the update by about 1e-4 of its size (measured; a kink such as a ReLU or
    # max-pool tie going the other way), and the next steps amplify it (1.4e-2 after three).
    # XLA's rounding tips it the same way: one step, held to 10x the measured 1.2e-4.
    np.testing.assert_allclose(xla_all_loss, all_loss, rtol=TOLERANCE)
    assert update_error(all_before, all_plain, xla_all) < 1e-3


def test_the_train_command_passes_jit_compile_to_the_step(monkeypatch):
    import types

    from keras_resnest.commands import train as cli
    from keras_resnest.training import run as run_lib

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    common = ["--model", "resnest14d", "--dataset", "digits", "-o", "run"]
    assert not cli.config_from_args(parser.parse_args(common)).jit_compile
    config = cli.config_from_args(parser.parse_args([*common, "--jit-compile"]))
    monkeypatch.setattr(run_lib, "make_train_step", lambda *args, **kwargs: kwargs)
    monkeypatch.setattr(run_lib.finetune, "set_backbone_trainable", lambda *args: None)
    run = types.SimpleNamespace(config=config, unfreeze_epoch=0, strategy=None, model=None,
                                optimizer=None, loss_fn=None, global_batch=32)
    step_options, _ = run_lib.set_phase(run, 0, None, None)
    assert step_options == {"jit_compile": True}


def test_xla_is_refused_where_it_cannot_run():
    import types

    from keras_resnest.training.loop import TrainConfig
    from keras_resnest.training.run import check_jit_compile

    with pytest.raises(ValueError, match="deterministic"):
        TrainConfig(jit_compile=True, deterministic=True).validate()
    # Synchronized BatchNorm all-reduces inside the forward pass: one replica only.
    with pytest.raises(ValueError, match="2 replicas"):
        check_jit_compile(types.SimpleNamespace(num_replicas_in_sync=2))
    check_jit_compile(tf.distribute.get_strategy())
