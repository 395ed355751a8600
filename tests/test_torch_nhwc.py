"""The PyTorch backend's copy-free convolution and BatchNorm (`keras_resnest.layers.torch_nhwc`)
compute what Keras' own ops compute, and the kernel they use follows every change of the weights
(set_weights, a training step, and writes torch counts nowhere: through `.data`, a numpy view,
`nn.Module._apply`), also inside `torch.inference_mode()`.

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

    # New values through set_weights: the convolutions must use them.
    weights = [w * np.float32(0.9) + np.float32(0.01) for w in model.get_weights()]
    model.set_weights(weights)
    print("after_set_weights", rel(model.predict_on_batch(x), keras_path(model, x)))
    print("changed", rel(model.predict_on_batch(x), fast))

    # A training step writes the kernels in place.
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


WRITES_SCRIPT = textwrap.dedent("""
    import numpy as np
    import keras
    import torch

    from keras_resnest.layers import backend_paths, torch_nhwc
    from keras_resnest.layers.conv import Conv2D
    from keras_resnest.layers.grouped_conv import GroupedConv2D

    assert keras.backend.backend() == "torch"
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 6, 6, 4)).astype("float32")

    def tiny():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((6, 6, 4)), Conv2D(8, 3, padding="same"),
                                 GroupedConv2D(8, 3, padding=1, groups=2)])

    def rel(a, b):
        a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
        return float(np.abs(a - b).max() / np.abs(b).max())

    def reads_in_place(model):
        # torch's kernel is a view of the variables (no copy that could fall behind them), when
        # no gradient is needed (predict_on_batch).
        conv, grouped = model.layers
        for variables in ([conv.kernel], grouped.group_kernels):
            with torch.no_grad():
                kernel = torch_nhwc.torch_kernel([v.value for v in variables])
            if (kernel.data_ptr() != variables[0].value.data_ptr()
                    or not kernel.is_contiguous(memory_format=torch.channels_last)):
                return 0
        return 1

    def check(model, name, previous=None):
        # The fast path against Keras' path on the variables as they are now; the fast path
        # ran before the write, so whatever it may keep was made from the old values.
        out = model.predict_on_batch(x)
        with backend_paths.portable_paths():
            reference = model.predict_on_batch(x)
        print(name, rel(out, reference))
        if previous is not None:
            print(name + "_changed", rel(out, previous))
        return out

    model = tiny()
    print("in_place", reads_in_place(model))
    out = model.predict_on_batch(x)
    kernels = [v for v in model.weights if len(v.shape) == 4]
    # Writes through a numpy view of the tensor: torch counts them nowhere.
    for v in kernels:
        v.value.detach().numpy()[...] *= -3
    out = check(model, "numpy_view", out)
    # `p.data.mul_()` counts in the version counter of the `.data` alias, not of `p`.
    model.layers[1].group_kernels[1].value.data.mul_(0)
    out = check(model, "data_mul", out)
    # nn.Module._apply gives the parameters new data under the same tensor objects.
    model._apply(lambda t: t * 0.5 if t.ndim == 4 else t)
    out = check(model, "module_apply", out)
    model.layers[0].kernel.value.data = torch.from_numpy(
        rng.normal(0, 0.3, (3, 3, 4, 8)).astype("float32"))
    out = check(model, "data_replaced", out)
    for v in kernels:
        v.value.detach().numpy()[...] += 0.1
    out = check(model, "numpy_view_again", out)

    # Built and called inside inference mode (inference tensors have no version counter).
    with torch.inference_mode():
        model = tiny()
        print("inference_in_place", reads_in_place(model))
        out = model(x)
        check(model, "inference_mode")
        for v in model.weights:
            v.value.numpy()[...] *= 2
        check(model, "inference_numpy_view", out)
""")


def run_torch_backend(script):
    """{name: figure} of the `name figure` lines `script` prints under KERAS_BACKEND=torch."""
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = dict(line.split() for line in result.stdout.splitlines() if line.count(" ") == 1)
    return {key: float(value) for key, value in figures.items()}


def test_the_torch_fast_path_computes_what_keras_computes():
    figures = run_torch_backend(SCRIPT)
    for key in ("fast_vs_keras", "after_set_weights", "after_fit"):
        assert figures[key] <= 1e-5, (key, figures)
    # The backward pass of a differently strided kernel may sum in another order.
    assert figures["grad"] <= 1e-4, figures
    # The weights did change, so the comparisons above could have failed.
    assert figures["changed"] > 1e-3 and figures["fit_changed"] > 1e-5, figures


def test_the_torch_kernel_follows_writes_torch_does_not_count():
    figures = run_torch_backend(WRITES_SCRIPT)
    # The fast path reads the variables in place, so there is nothing to fall behind.
    assert figures["in_place"] == 1 and figures["inference_in_place"] == 1, figures
    assert figures["inference_mode"] <= 1e-6, figures
    writes = ("numpy_view", "data_mul", "module_apply", "data_replaced", "numpy_view_again",
              "inference_numpy_view")
    for write in writes:
        assert figures[write] <= 1e-6, (write, figures)
        # Each write changed the output, so the comparison could have failed.
        assert figures[write + "_changed"] > 1e-3, (write, figures)
