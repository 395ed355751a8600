"""keras-hub's DeepLabV3 segmenter and RetinaNet detector on a ResNeSt encoder, sized for the
digit canvases (`digit_tasks.canvases`): what `python -m benchmarks.hub_tasks` trains and the
keras-hub tests build.
"""

# DeepLabV3's rates 6/12/18 are for a 33x33 map (513 px at stride 16); canvases of 32-64 px
# give 2x2 to 8x8 maps, where a 3x3 kernel already spans the map. Rate 1 also keeps training
# affordable: TensorFlow's CPU gradient of a dilated 2048-channel convolution is slow.
ASPP_RATES = {8: [1, 1, 1], 16: [1, 1, 1], 32: [1, 1, 1]}
SEGMENTATION_KEYS = {  # output stride -> (spatial pyramid pooling level, upsampling to P2)
    8: ("P3", 2),
    16: ("P4", 4),
    32: ("P5", 8),
}
# The usual detection evaluation threshold: the average precision sees the whole ranking.
EVALUATION_MIN_SCORE = 0.05


def normalised(images):
    """0..255 canvases -> the backbone's input (the ResNeSt converter's ImageNet mean/std)."""
    from keras import ops

    from keras_resnest.hub import ResNeStImageConverter

    return ops.convert_to_numpy(ResNeStImageConverter()(images))


def deeplab_v3_segmenter(model, output_stride, size, dilation_rates=None):
    """keras-hub's DeepLabV3 segmenter on a ResNeSt encoder, for the digit canvases.

    Args:
        model: str. A keras_resnest model name, e.g. "resnest14d".
        output_stride: int. The encoder's output stride: 8, 16 or 32.
        size: int. The canvas side in pixels.
        dilation_rates: list of 3 ints or None. DeepLabV3's atrous rates. Defaults to None:
            `ASPP_RATES[output_stride]`.
    """
    import keras_hub

    from keras_resnest.hub import ResNeStBackbone

    from digit_tasks.canvases import SEGMENTATION_CLASSES

    if output_stride not in SEGMENTATION_KEYS:
        raise ValueError(f"output_stride must be one of {sorted(SEGMENTATION_KEYS)}, "
                         f"got {output_stride}")
    encoder = ResNeStBackbone.from_model_name(model, output_stride=output_stride,
                                              image_shape=(size, size, 3))
    level, upsampling = SEGMENTATION_KEYS[output_stride]
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key=level, upsampling_size=upsampling,
        low_level_feature_key="P2", projection_filters=48,
        dilation_rates=dilation_rates or ASPP_RATES[output_stride])
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone,
                                                    num_classes=SEGMENTATION_CLASSES)


def retinanet_detector(model, size, num_classes, min_score=EVALUATION_MIN_SCORE):
    """keras-hub's RetinaNet detector on a ResNeSt encoder, heads initialised as in the paper.

    Levels P3..P5 (strides 8..32) with anchors of twice the stride, boxes in "yxyx" pixels.

    Args:
        model: str. A keras_resnest model name, e.g. "resnest14d".
        size: int. The canvas side in pixels.
        num_classes: int. The object classes.
        min_score: float. The decoder keeps detections down to this score (keras-hub's
            default keeps only scores of 0.5 and more). Defaults to `EVALUATION_MIN_SCORE`.
    """
    import keras_hub

    from keras_resnest.hub import ResNeStBackbone, initialise_heads_as_retinanet

    encoder = ResNeStBackbone.from_model_name(model, image_shape=(size, size, 3))
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=5, use_p5=False,
        image_shape=(size, size, 3))
    anchors = keras_hub.layers.AnchorGenerator(
        "yxyx", min_level=3, max_level=5, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0],
        anchor_size=2)
    decoder = keras_hub.layers.NonMaxSuppression("yxyx", from_logits=True,
                                                 confidence_threshold=min_score)
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=num_classes, bounding_box_format="yxyx",
        anchor_generator=anchors, prediction_decoder=decoder)
    initialise_heads_as_retinanet(detector)
    return detector
