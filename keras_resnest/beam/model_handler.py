"""A `RunInference` model handler for keras_resnest models: class probabilities or pooled
features of evaluation-transformed images.

Beam ships TensorFlow handlers (`apache_beam.ml.inference.tensorflow_inference`), but they load
models through `tf.keras`, which is Keras 2 (tf-keras) under TensorFlow 2.16+; Beam documents
the Keras 3 caveat in apache/beam#30616. This handler loads with Keras 3 the way
`keras-resnest predict` does (`keras_resnest.model_source.load_model_for_export`).

Each worker reads the model where it lives, through Beam's `FileSystems` (`gs://`, `s3://`,
or a local path on the DirectRunner), never from the launcher's disk. It is not staged as a
side input of its bytes: RunInference loads the model in `load_model`, which sees no side
inputs; bytes in the handler would be pickled into the job graph (a ResNeSt-50 is 100 MB,
Dataflow refuses job requests of more than 20 MB); and the workers already hold the credentials
that read the images from the same store. Beam's RunInference loads it once per worker process.

Example:
    >>> handler = ResNeStModelHandler("resnest14d", weights="none", image_size=32)
    >>> handler.batch_elements_kwargs()
    {'min_batch_size': 32, 'max_batch_size': 32}
"""
from apache_beam.ml.inference.base import ModelHandler

DEFAULT_MAX_BATCH_SIZE = 32


class ResNeStModelHandler(ModelHandler):
    """Loads a model in each worker and runs it on batches of `[size, size, 3]` float32 images.

    Args:
        model_name: str. A keras_resnest model name; ignored for a `.keras` model file.
        weights: str. "imagenet", "none", a weights file, or a `.keras` model file (the file is
            the model), local or on a Beam filesystem (gs://, s3://). Must be readable where
            the workers run.
        image_size: int. Side of the evaluation crop the images arrive with.
        embeddings: bool. Return the pooled features (the input of the Dense "fc" head) instead
            of the class probabilities. Defaults to False.
        min_batch_size: int or None. Smallest batch Beam groups for one call (a bundle's last
            batch may be smaller); None is `max_batch_size`: Beam's adaptive batching starts
            at 1 image and stays small for long, which lowers the throughput
            (`python -m benchmarks.predict_batch`). Defaults to None.
        max_batch_size: int. Largest batch Beam groups for one call (bounds the memory of a
            worker). Defaults to 32.
        weights_mirror: str or None. `KERAS_RESNEST_WEIGHTS_URL` for `weights="imagenet"` in
            the workers (a bucket: `gs://bkt/resnest-weights`): the launcher's environment is
            not the workers' on Dataflow, Flink or Spark. None leaves the workers' own.
            Defaults to None.
    """

    def __init__(self, model_name, weights, image_size, embeddings=False, min_batch_size=None,
                 max_batch_size=DEFAULT_MAX_BATCH_SIZE, weights_mirror=None):
        super().__init__(min_batch_size=max_batch_size if min_batch_size is None
                         else min_batch_size, max_batch_size=max_batch_size)
        self._model_name = model_name
        self._weights = weights
        self._image_size = image_size
        self._embeddings = embeddings
        self._weights_mirror = weights_mirror

    def load_model(self):
        """The Keras model whose single output is what each image gets."""
        import os

        import keras

        from keras_resnest import classifier, filesystems
        from keras_resnest.model_source import load_model_for_export
        from keras_resnest.weights.pretrained import MIRROR_ENV

        if self._weights_mirror:
            os.environ[MIRROR_ENV] = self._weights_mirror
        # Keras and h5py open local files only: a remote file is copied next to the worker for
        # the load, and removed once the model is in memory.
        with filesystems.local_copy(self._weights) as weights:
            model = load_model_for_export(self._model_name, weights, self._image_size)
        if self._embeddings:
            # The feature/head split: whatever feeds the "fc" Dense layer (global pooling, and
            # dropout, which is the identity at inference).
            features = classifier.logits_layer(model).input
            return keras.Model(model.inputs[0], features, name=f"{model.name}_features")
        head = classifier.classifier_head(model)
        return keras.Model(head.inputs[0], head.outputs[1], name=f"{model.name}_probabilities")

    def run_inference(self, batch, model, inference_args=None):
        """One float32 row (probabilities or features) per image of `batch`."""
        import numpy as np

        return list(model.predict_on_batch(np.stack(batch)))

    def get_num_bytes(self, batch):
        return sum(image.nbytes for image in batch)

    def get_metrics_namespace(self):
        return "keras_resnest"
