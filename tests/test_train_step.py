"""The fused training step on TensorFlow (`BatchNorm.fused_training`, bn0 per group in the
split-attention block) gives the numbers of the step with Keras' own BatchNorm ops.

Both train a few steps from the same weights at a small learning rate; they differ by float32
rounding only (the fused op sums the batch statistics in another order), which the steps carry
but do not blow up. 64 px, so that every BatchNorm but the split attention's bn1 (one value
per channel and image) sees more than one value per image and takes the fused op.
"""
import numpy as np
import pytest

from keras_resnest.layers import backend_paths

from tests.helpers.train_steps import train_step_run, update_error

SIZE = 64
# Loss and weight updates, relative. Measured (TF 2.21, AVX-512 CPU): 1e-7 on the loss and
# 6.5e-7 on the updates.
TOLERANCE = 1e-5


@pytest.mark.slow  # two traced steps of resnest14d
def test_fused_training_step_matches_keras_batch_norm():
    fused_losses, before, fused, fused_ops = train_step_run(SIZE)
    with backend_paths.unfused_training():
        keras_losses, keras_before, plain, keras_ops = train_step_run(SIZE)
    # The two steps compute BatchNorm differently, from the same start.
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= fused_ops
    assert not any(op.startswith("FusedBatchNorm") for op in keras_ops)
    assert all(np.array_equal(a, b) for a, b in zip(before, keras_before))
    np.testing.assert_allclose(fused_losses, keras_losses, rtol=TOLERANCE)
    assert update_error(before, plain, fused) < TOLERANCE
