"""The model trained on a dataset: a ResNeSt backbone plus a new head for the dataset's classes.

The backbone keeps its PyTorch-style layer names; the head is a float32 Dense "fc" and a
float32 softmax "predictions", as in `create_model(include_top=True)`, so a trained model looks
like any other keras_resnest classifier (and exports the same way). Freezing the backbone sets
`trainable=False` on its layers, which in Keras 3 also runs their BatchNormalization in
inference mode (moving statistics, no updates).

Example:
    >>> from keras_resnest.training.finetune import build_classifier, set_backbone_trainable
    >>> model = build_classifier("resnest14d", num_classes=10, image_size=32, weights=None)
    >>> model.output_shape, set_backbone_trainable(model, False) > 0
    ((None, 10), True)
    >>> [layer.name for layer in model.layers if layer.trainable and layer.weights]
    ['fc']
"""
import keras

HEAD_LAYERS = ("drop", "fc", "predictions")


def build_classifier(
    model_name,
    *,
    num_classes,
    image_size,
    weights=None,
    drop_rate=0.0,
    drop_path_rate=0.0,
    dropblock_rate=0.0,
    last_gamma=None,
):
    """ResNeSt `model_name` with a new `num_classes` head, input `image_size` px RGB 0..255.

    `weights`: None (random init), "imagenet" or a weights file for the backbone. `last_gamma`
    (default: only without weights) zero-initialises each Bottleneck's last BN gamma.
    """
    from keras_resnest.models import create_model
    from keras_resnest.training.recipe import zero_init_last_gamma

    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: expected an integer >= 2.")
    backbone = create_model(
        model_name,
        include_top=False,
        weights=weights,
        input_shape=(image_size, image_size, 3),
        pooling="avg",
        drop_path_rate=drop_path_rate,
        dropblock_rate=dropblock_rate,
    )
    x = backbone.output
    if drop_rate > 0:
        x = keras.layers.Dropout(drop_rate, name="drop")(x)
    x = keras.layers.Dense(num_classes, dtype="float32", name="fc")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    # Re-using the backbone's graph keeps the model flat: the backbone's layers, then "fc".
    model = keras.Model(backbone.input, outputs, name=f"{model_name}_classifier")
    if last_gamma is None:
        last_gamma = weights is None  # zeroing gammas of pretrained blocks would erase them
    if last_gamma:
        zero_init_last_gamma(model)
    return model


def set_backbone_trainable(model, trainable):
    """(Un)freezes every layer but the head; returns the number of backbone layers changed."""
    changed = 0
    for layer in model.layers:
        if layer.name in HEAD_LAYERS or not layer.weights:
            continue
        if layer.trainable != trainable:
            layer.trainable = trainable
            changed += 1
    return changed
