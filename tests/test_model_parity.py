"""Every model against the official PyTorch ResNeSt: parameters and logits/feature maps."""
import numpy as np
import pytest

import keras_resnest
from tests import torch_reference as ref
from tests.torch_reference import PARITY_TOLERANCE


def _ported_pair(name, **torch_kwargs):
    torch_model = ref.build_randomized(name, **torch_kwargs)
    return torch_model, ref.state_dict_numpy(torch_model)


def _trainable_parameters(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


# Odd, non-square input: exercises the ceil-mode shortcut pool and the explicit paddings.
# The big models run at small sizes: the size does not change the code path.
@pytest.mark.parametrize("name", keras_resnest.list_models())
def test_logits_match_official_model_at_odd_size(name):
    torch_model, state = _ported_pair(name)
    model = keras_resnest.create_model(name, weights=None, classifier_activation=None)
    report = keras_resnest.load_torch_state_dict(model, state)

    assert _trainable_parameters(model) == sum(p.numel() for p in torch_model.parameters())
    assert report.tensors == len([k for k in state if not k.endswith("num_batches_tracked")])
    images = ref.random_images(2, 45, 67, seed=1)
    error = ref.relative_error(model.predict(images, verbose=0), ref.logits(torch_model, images))
    assert error <= PARITY_TOLERANCE, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("name", ["resnest14d", "resnest50"])
def test_logits_match_official_model_at_native_resolution(name):
    torch_model, state = _ported_pair(name)
    model = keras_resnest.create_model(name, weights=None, classifier_activation=None,
                                       input_shape=(224, 224, 3))
    keras_resnest.load_torch_state_dict(model, state)
    images = ref.random_images(2, 224, 224, seed=2)
    error = ref.relative_error(model.predict(images, verbose=0), ref.logits(torch_model, images))
    assert error <= PARITY_TOLERANCE


def test_resnest50_parameter_count_is_official():
    model = keras_resnest.ResNeSt50(weights=None)
    assert _trainable_parameters(model) == 27_483_240


# Official dilation=2 (output stride 16) and dilated=True (8), including the stride-1 avd blur
# in the first block of each dilated stage. fast_4s2x40d adds avd_first and cardinality 2.
@pytest.mark.parametrize("name", ["resnest50", "resnest50_fast_4s2x40d"])
@pytest.mark.parametrize("output_stride,torch_kwargs", [(16, {"dilation": 2}),
                                                        (8, {"dilated": True})])
def test_dilated_feature_maps_match_official(name, output_stride, torch_kwargs):
    torch_model, state = _ported_pair(name, **torch_kwargs)
    model = keras_resnest.create_model(name, weights=None, include_top=False,
                                       output_stride=output_stride)
    keras_resnest.load_torch_state_dict(model, state)
    images = ref.random_images(1, 49, 65, seed=3)
    keras_features = model.predict(images, verbose=0)
    torch_features = ref.features(torch_model, images)
    assert keras_features.shape[1:3] == (-(-49 // output_stride), -(-65 // output_stride))
    assert ref.relative_error(keras_features, torch_features) <= PARITY_TOLERANCE
