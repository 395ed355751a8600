"""Choosing the tf.distribute strategy: from a name, the local devices and `TF_CONFIG`.

* `auto`: MultiWorkerMirroredStrategy when `TF_CONFIG` names more than one worker, else
  MirroredStrategy over all local GPUs when there are any, else the default (one device).
* `mirrored`: MirroredStrategy over all local GPUs, or over all logical CPU devices when there
  is no GPU (see `split_cpu`).
* `multiworker`: MultiWorkerMirroredStrategy configured from `TF_CONFIG`.
* `none`: the default strategy (one device, no distribution).

`split_cpu(n)` splits the CPU into n logical devices (to exercise MirroredStrategy on a CPU-only
machine); like the strategy itself it must run before any other TensorFlow op.

Example:
    >>> from keras_resnest.training.strategy import make_strategy
    >>> make_strategy("none").num_replicas_in_sync
    1
"""
import json
import os

STRATEGIES = ("auto", "mirrored", "multiworker", "none")


def split_cpu(num_devices):
    """Splits the first physical CPU into `num_devices` logical devices (before any TF op)."""
    import tensorflow as tf

    if num_devices < 1:
        raise ValueError(f"num_devices={num_devices!r}: expected >= 1 logical CPU devices.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as error:  # TensorFlow already initialised its devices
        raise RuntimeError(
            "split_cpu() must run before any TensorFlow op (the runtime is already initialised)."
        ) from error


def tf_config_workers():
    """Number of workers (chief included) named by the TF_CONFIG environment variable (0: none)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster' key: {error}") from error
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name="auto"):
    """Returns a tf.distribute strategy for `name` (one of STRATEGIES)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r}: expected one of {', '.join(STRATEGIES)}.")
    if name == "auto":
        if tf_config_workers() > 1:
            name = "multiworker"
        elif tf.config.list_physical_devices("GPU"):
            name = "mirrored"
        else:
            name = "none"
    if name == "multiworker":
        if tf_config_workers() == 0:
            raise ValueError(
                "strategy='multiworker' needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """True on the worker that writes the run's outputs (task index 0, or the only process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_index(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0
