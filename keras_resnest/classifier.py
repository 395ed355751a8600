"""The classifier view of a model that every exporter needs: image in, logits and probabilities out.

ResNeSt classifiers end in a Dense layer named "fc" (logits), optionally followed by the float32
softmax "predictions". Exporters need both tensors (logits for the parity report, probabilities
for clients), whatever `classifier_activation` the model was built with.

Example:
    >>> import keras_resnest
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3))
    >>> head = classifier_head(model)
    >>> [tuple(t.shape) for t in head.outputs]
    [(None, 1000), (None, 1000)]
"""
import keras

LOGITS_LAYER = "fc"


def classifier_head(model):
    """A model sharing `model`'s weights whose outputs are `[logits, probabilities]` (float32).

    Raises ValueError if `model` has no Dense "fc" classifier layer (e.g. include_top=False).
    """
    if len(model.inputs) != 1:
        raise ValueError(
            f"expected a model with one image input; {model.name!r} has {len(model.inputs)}"
        )
    fc = logits_layer(model)
    logits = fc.output
    if logits.dtype != "float32":  # mixed-precision models: serve float32 numbers
        logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(logits)
    if model.outputs[0] is not fc.output and _is_softmax(model.layers[-1]):
        probabilities = model.outputs[0]
    else:
        probabilities = keras.layers.Activation(
            "softmax", dtype="float32", name="export_probabilities"
        )(logits)
    return keras.Model(model.inputs[0], [logits, probabilities], name=f"{model.name}_head")


def logits_layer(model):
    """The Dense "fc" layer; ValueError if the model has none (e.g. include_top=False)."""
    layer = None
    if any(candidate.name == LOGITS_LAYER for candidate in model.layers):
        layer = model.get_layer(LOGITS_LAYER)
    if not isinstance(layer, keras.layers.Dense):
        # Worded for every caller (export, predict): the model is what is wrong, not the command.
        raise ValueError(
            f"expected a classifier ending in a Dense layer named {LOGITS_LAYER!r} (a model "
            f"built with include_top=True); model {model.name!r} has none"
        )
    return layer


def num_classes(model):
    """Number of classes of a classifier model (units of its "fc" layer)."""
    return int(logits_layer(model).units)


def fixed_image_size(model):
    """The square input size the model was built for, or None if height/width are free."""
    _, height, width, _ = model.inputs[0].shape
    if height is None or width is None:
        return None
    if height != width:
        raise ValueError(f"export supports square inputs; model input is {height}x{width}")
    return int(height)


def resolve_image_size(model, image_size):
    """The export image size: `image_size` if given (and compatible), else the model's own."""
    built_for = fixed_image_size(model)
    if image_size is None:
        if built_for is None:
            raise ValueError(
                "the model accepts any input size: pass image_size (e.g. 224) to export it"
            )
        return built_for
    image_size = int(image_size)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if built_for is not None and built_for != image_size:
        raise ValueError(
            f"the model was built for {built_for}x{built_for} inputs; image_size "
            f"{image_size} differs (rebuild it with input_shape=({image_size}, {image_size}, 3))"
        )
    return image_size


def _is_softmax(layer):
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Activation) and getattr(
        activation, "__name__", ""
    ) == "softmax"
