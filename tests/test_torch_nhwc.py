"""The PyTorch backend's copy-free convolution and BatchNorm (`keras_resnest.layers.torch_nhwc`)
compute what Keras' own ops compute, and the kernel kept for inference follows every change of
the weights (set_weights, a training step).

The official-model parity of the PyTorch backend is `tests/test_backends.py`; this file compares
the fast path against Keras' path (`backend_paths.portable_paths()` turns the fast path off) in
a fresh PyTorch-backend process.
"""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import numpy as np
    import keras
    import torch

    import keras_resnest
    from keras_resnest.layers import backend_paths, torch_nhwc

    assert keras.backend.backend() == "torch"
    calls = {"conv2d": 0, "batch_norm_inference": 0}
    for name in calls:
        def counted(*args, _original=getattr(torch_nhwc, name), _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        setattr(torch_nhwc, name, counted)

    def rel(a, b):
        a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
        return float(np.abs(a - b).max() / np.abs(b).max())

    def keras_path(model, x):
        with backend_paths.portable_paths():
            return model.predict_on_batch(x)

    keras.utils.set_random_seed(0)
    model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3),
                                       classes=10, classifier_activation=None)
    # Non-trivial BatchNorm statistics, so that BN is not the identity.
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    x = rng.uniform(0, 1, (2, 64, 64, 3)).astype("float32")

    fast = model.predict_on_batch(x)
    assert all(calls.values()), calls
    print("fast_vs_keras", rel(fast, keras_path(model, x)))

    # New values through set_weights: the kept kernels must not be used.
    weights = [w * np.float32(0.9) + np.float32(0.01) for w in model.get_weights()]
    model.set_weights(weights)
    print("after_set_weights", rel(model.predict_on_batch(x), keras_path(model, x)))
    print("changed", rel(model.predict_on_batch(x), fast))

    # A training step writes the kernels in place (torch's version counter moves).
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.predict_on_batch(x)
    model.fit(x, np.array([1, 2]), epochs=1, batch_size=2, verbose=0)
    after = model.predict_on_batch(x)
    print("after_fit", rel(after, keras_path(model, x)))
    print("fit_changed", rel(after, before))

    # Under autograd the transpose stays in the graph: gradients equal Keras' path.
    kernel = model.get_layer("conv1_0").kernel
    def grad():
        with torch.enable_grad():
            out = model(x, training=False)
            (g,) = torch.autograd.grad((out * torch.arange(10.0)).sum(), kernel.value)
        return g.numpy()
    fast_grad = grad()
    with backend_paths.portable_paths():
        keras_grad = grad()
    print("grad", rel(fast_grad, keras_grad))
""")


def test_the_torch_fast_path_computes_what_keras_computes():
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = dict(line.split() for line in result.stdout.splitlines() if line.count(" ") == 1)
    figures = {key: float(value) for key, value in figures.items()}
    for key in ("fast_vs_keras", "after_set_weights", "after_fit"):
        assert figures[key] <= 1e-5, (key, figures)
    # The backward pass of a differently strided kernel may sum in another order.
    assert figures["grad"] <= 1e-4, figures
    # The weights did change, so the comparisons above could have failed.
    assert figures["changed"] > 1e-3 and figures["fit_changed"] > 1e-5, figures
