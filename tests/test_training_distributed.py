"""End-to-end training runs: MirroredStrategy accuracy, MultiWorkerMirroredStrategy agreement,
kill-and-resume, mixed_bfloat16. All offline on the embedded digits with resnest14d at 32 px.

Multi-device and multi-process runs go through `python -m keras_resnest.training` in
subprocesses: logical CPU devices and the multi-worker runtime must be set up before any other
TensorFlow op, which this test process has long done.
"""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.helpers.training_runs import TRAIN, read_json, train_env, train_killed_after

pytestmark = pytest.mark.slow  # the whole file: see `make test-fast`


def _run(args, timeout, **env):
    proc = subprocess.run(
        TRAIN + args, env=train_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return arrays


def test_digits_under_mirrored_strategy_on_two_cpu_devices_reaches_90_percent(tmp_path):
    run_dir = str(tmp_path / "run")
    # The timeout only guards against a hang: on a busy 2-core machine this run has taken 22
    # minutes (6 epochs). Measured on a busy machine: 4 epochs top-1 0.975 (8 minutes), 3 epochs
    # 0.947 (6 minutes).
    out = _run(
        [
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--strategy",
            "mirrored",
            "--cpu-devices",
            "2",
            "--warmup-epochs",
            "1",
            "--seed",
            "0",
            "-o",
            run_dir,
        ],
        timeout=2400,
    )
    assert "2 replica(s) x 32 = global batch 64" in out
    evaluation = read_json(os.path.join(run_dir, "evaluation.json"))
    print(
        f"digits resnest14d mirrored x2: top1 {evaluation['top1']:.4f} "
        f"top5 {evaluation['top5']:.4f}"
    )
    assert evaluation["top1"] >= 0.90
    assert evaluation["examples"] == 360
    matrix = np.array(evaluation["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 360
    assert np.trace(matrix) / 360 == pytest.approx(evaluation["top1"])
    assert "confusion matrix" in out
    assert [int(r["epoch"]) for r in _history(run_dir)] == list(range(3))
    assert read_json(os.path.join(run_dir, "class_names.json")) == [str(d) for d in range(10)]
    summary = read_json(os.path.join(run_dir, "run_summary.json"))
    assert (summary["replicas"], summary["global_batch_size"], summary["optimizer_steps"]) == (
        2,
        64,
        3 * 22,
    )
    assert os.path.exists(os.path.join(run_dir, "best.keras"))
    events = [name for _, _, names in os.walk(os.path.join(run_dir, "logs")) for name in names]
    assert any(
        name.startswith("events.out.tfevents") for name in events
    )  # keras.callbacks.TensorBoard

    # The saved .keras model is the evaluated one: reload it and re-score the validation set.
    import keras

    import keras_resnest  # noqa: F401  (registers the custom layers)
    from keras_resnest.training.digits import load_digits_dataset

    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    split = load_digits_dataset(32)
    predictions = model.predict(split.val_images.astype("float32"), batch_size=120, verbose=0)
    assert np.mean(predictions.argmax(-1) == split.val_labels) == pytest.approx(
        evaluation["top1"], abs=1 / 360
    )


# What TensorFlow prints when a worker's gRPC server cannot bind its port (TF 2.21).
BIND_FAILURE = "Could not start gRPC server"


def _free_ports(count):
    """Ports free right now, on every interface (TensorFlow's server binds 0.0.0.0)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(args, log_dir, attempts=3, first_ports=None):
    """Runs one training process per worker on fresh local ports; returns (run_dir, attempts used).

    A port found free can be taken by another process before TensorFlow binds it: TF_CONFIG must
    name the port before the workers start, so there is always a window. Holding the port here
    (SO_REUSEADDR, never listening) would shut out most takers, but only while gRPC goes on
    setting SO_REUSEADDR on its own socket, a detail of its implementation. So the race is
    handled instead, relying on nothing but TensorFlow's message: a launch whose worker could not
    bind is recognised, all its processes are stopped (the others would wait for the missing
    peer) and the whole launch is repeated on new ports, in a new run directory. Any other
    failure fails the test at once.
    """
    for attempt in range(attempts):
        ports = first_ports if attempt == 0 and first_ports else _free_ports(2)
        run_dir = os.path.join(log_dir, f"run{attempt}")
        workers = [f"127.0.0.1:{port}" for port in ports]
        procs, logs = [], []
        try:
            for index in range(len(workers)):
                tf_config = json.dumps(
                    {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
                )
                logs.append(
                    open(os.path.join(log_dir, f"attempt{attempt}-worker{index}.log"), "w+")
                )
                procs.append(
                    subprocess.Popen(
                        TRAIN + args + ["-o", run_dir],
                        env=train_env(TF_CONFIG=tf_config),
                        stdout=logs[-1],
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            deadline = time.time() + 600
            # A worker that fails leaves the others waiting for it: stop them all at the first
            # failure.
            while time.time() < deadline and any(p.poll() is None for p in procs):
                if any(p.poll() not in (None, 0) for p in procs):
                    break
                time.sleep(0.2)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
        if all(p.returncode == 0 for p in procs):
            return run_dir, attempt + 1
        if not any(BIND_FAILURE in output for output in outputs):
            pytest.fail("a worker failed:\n" + "\n".join(o[-3000:] for o in outputs))
    pytest.fail(f"no launch of {attempts} could bind its ports")


def test_multiworker_two_processes_train_the_same_steps_to_identical_weights(tmp_path):
    steps = 4
    # The first launch meets a port that is taken, as a lost race would: it must be retried.
    taken = socket.socket()
    taken.bind(("", 0))
    taken.listen()
    try:
        run_dir, attempts = _run_workers(
            [
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--steps-per-epoch",
                str(steps),
                "--strategy",
                "multiworker",
            ],
            str(tmp_path),
            first_ports=[taken.getsockname()[1], _free_ports(1)[0]],
        )
    finally:
        taken.close()
    assert attempts == 2
    assert BIND_FAILURE in (tmp_path / "attempt0-worker0.log").read_text()
    chief_dir, worker_dir = run_dir, os.path.join(run_dir, "workers", "1")
    for directory in (chief_dir, worker_dir):
        summary = read_json(os.path.join(directory, "run_summary.json"))
        assert (summary["replicas"], summary["global_batch_size"], summary["optimizer_steps"]) == (
            2,
            16,
            steps,
        )
    chief, worker = (
        _h5_arrays(os.path.join(d, "model.weights.h5")) for d in (chief_dir, worker_dir)
    )
    assert chief.keys() == worker.keys() and len(chief) > 100
    different = [name for name in chief if not np.array_equal(chief[name], worker[name])]
    assert different == []
    assert os.path.exists(os.path.join(chief_dir, "model.keras"))
    assert not os.path.exists(
        os.path.join(worker_dir, "model.keras")
    )  # only the chief saves the model


def test_a_killed_run_resumes_at_the_same_epoch_and_step(tmp_path):
    run_dir = str(tmp_path / "run")
    steps, epochs = 12, 2
    args = [
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--steps-per-epoch",
        str(steps),
        "--checkpoint-every",
        "1",
        "--strategy",
        "none",
        "-o",
        run_dir,
    ]
    # The trainer SIGKILLs itself right after checkpoint 1 x 12 + 3 (KillAfterCheckpoint, a
    # callback): a real kill, no cleanup, no final save, at epoch 1 step 3 on any machine.
    proc = subprocess.run(
        train_killed_after(steps + 3) + args,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    killed_at = read_json(os.path.join(run_dir, "backup", "progress.json"))
    assert killed_at == {"epoch": 1, "step": 3}
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))
    assert [int(r["epoch"]) for r in _history(run_dir)] == [0]

    out = _run(args, timeout=600)
    match = re.search(r"resumed from \S+: epoch (\d+) step (\d+)", out)
    assert match, out[-2000:]
    epoch, step = int(match.group(1)), int(match.group(2))
    assert (epoch, step) == (1, killed_at["step"])  # mid-epoch, where it died: nothing lost
    summary = read_json(os.path.join(run_dir, "run_summary.json"))
    assert summary["optimizer_steps"] == epochs * steps  # every step ran exactly once
    assert [int(r["epoch"]) for r in _history(run_dir)] == [0, 1]  # epoch 1 once, epoch 0 kept
    assert os.path.exists(os.path.join(run_dir, "model.keras"))
    assert os.path.exists(os.path.join(run_dir, "best.keras"))

    # The finished folder knows its run: with EMA its checkpoint cannot be restored (a traceback
    # of 87 unbound objects before run_record.py); the command, started as `keras-resnest` is
    # (TensorFlow's start-up lines hidden), says so in one line and does no work.
    command = [sys.executable, "-m", "keras_resnest_cli", "train", *TRAIN[3:], "--ema", "0.999"]
    proc = subprocess.run(command + args, env=train_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"keras-resnest train: error: {run_dir} holds a run with other options (EMA off -> "
        "0.999): rerun with the same options, or choose a new -o folder."
    ], proc.stderr[-3000:]
    assert read_json(os.path.join(run_dir, "run_summary.json")) == summary


def test_a_lost_worker_ends_the_survivor_with_one_line(tmp_path):
    # Worker 1 dies right after checkpoint 2 (epoch 0 step 2); the chief, waiting in the next
    # step's all-reduce, must end with one line saying what to do, not a collective-op trace.
    steps, kill_at = 6, 2
    for attempt in range(3):  # a port taken between _free_ports and the bind: a new launch
        run_dir = str(tmp_path / f"run{attempt}")
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        args = [
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--steps-per-epoch",
            str(steps),
            "--checkpoint-every",
            "1",
            "--strategy",
            "multiworker",
            "-o",
            run_dir,
        ]

        def env(index):
            return train_env(
                TF_CONFIG=json.dumps(
                    {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
                )
            )

        chief = subprocess.Popen(
            TRAIN + args, env=env(0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            lost = subprocess.run(
                train_killed_after(kill_at) + args,
                env=env(1),
                capture_output=True,
                text=True,
                timeout=600,
            )
            out, err = chief.communicate(timeout=600)
        finally:
            if chief.poll() is None:
                chief.kill()
                chief.wait()
        if BIND_FAILURE in lost.stderr + err:
            continue
        assert lost.returncode == -signal.SIGKILL, lost.stderr[-3000:]
        assert chief.returncode == 1, out[-2000:] + err[-3000:]
        errors = [
            line for line in err.splitlines() if line.startswith("keras-resnest train: error:")
        ]
        assert len(errors) == 1, err[-3000:]
        assert "worker 1 (" + workers[1] + ") was lost" in errors[0]
        assert "last saved step is epoch 0 step 2" in errors[0]
        assert errors[0].endswith(
            "restart every worker with the same command to resume from there."
        )
        assert "Traceback" not in err
        assert read_json(os.path.join(run_dir, "backup", "progress.json")) == {
            "epoch": 0,
            "step": kill_at,
        }
        return
    pytest.fail("no launch of 3 could bind its ports")


def test_mixed_bfloat16_training_runs_and_learns(tmp_path):
    import keras

    from keras_resnest.training.augment import AugmentConfig
    from keras_resnest.training.data import digits_data
    from keras_resnest.training.loop import TrainConfig, train

    config = TrainConfig(
        model_name="resnest14d",
        image_size=32,
        epochs=3,
        batch_size=32,
        steps_per_epoch=15,
        warmup_epochs=0.5,
        precision="mixed_bfloat16",
        augment=AugmentConfig(min_area=0.5, flip=False),
        checkpoint_every=100,
    )
    result = train(config, digits_data(32), str(tmp_path / "run"), log=lambda *a, **k: None)
    model = result["model"]
    conv = next(
        layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
    )  # the stem's first
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored
    losses = [row["loss"] for row in result["history"]]
    accuracies = [row["accuracy"] for row in result["history"]]
    print(
        f"mixed_bfloat16 digits: loss {losses}, train accuracy {accuracies}, "
        f"val top1 {result['evaluation']['top1']:.4f}"
    )
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert accuracies[-1] >= 0.5  # chance is 0.1


def test_frozen_backbone_then_unfreeze_with_ema_saves_the_average(tmp_path):
    import keras

    from keras_resnest.training.data import digits_data
    from keras_resnest.training.finetune import build_classifier
    from keras_resnest.training.loop import TrainConfig, train

    messages = []
    config = TrainConfig(
        model_name="resnest14d",
        image_size=32,
        epochs=2,
        batch_size=16,
        steps_per_epoch=3,
        freeze_backbone=True,
        unfreeze_epoch=1,
        ema_momentum=0.5,
        warmup_epochs=0,
    )
    run_dir = str(tmp_path / "run")
    result = train(config, digits_data(32), run_dir, log=messages.append)
    assert "epoch 1: backbone frozen" in messages and "epoch 2: backbone trainable" in messages
    assert result["optimizer_steps"] == 6
    # The saved model holds the EMA of the weights; the live model keeps the raw weights.
    saved = build_classifier("resnest14d", num_classes=10, image_size=32)
    saved.load_weights(f"{run_dir}/model.weights.h5")
    raw = result["model"]
    fc_saved, fc_raw = saved.get_layer("fc").kernel.numpy(), raw.get_layer("fc").kernel.numpy()
    assert not np.allclose(fc_saved, fc_raw)
    reloaded = keras.models.load_model(f"{run_dir}/model.keras")
    np.testing.assert_array_equal(reloaded.get_layer("fc").kernel.numpy(), fc_saved)
    assert all(
        layer.trainable for layer in reloaded.layers
    )  # saved as a plain, unfrozen classifier


def test_deterministic_mode_repeats_a_run_exactly(tmp_path):
    # Random init, shuffling, RandAugment, MixUp and two mirrored replicas: all seeded.
    def run(seed, name):
        run_dir = str(tmp_path / name)
        _run(
            [
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--steps-per-epoch",
                "3",
                "--strategy",
                "mirrored",
                "--cpu-devices",
                "2",
                "--deterministic",
                "--seed",
                str(seed),
                "--mixup",
                "0.2",
                "--randaugment",
                "-o",
                run_dir,
            ],
            timeout=600,
        )
        return _h5_arrays(os.path.join(run_dir, "model.weights.h5"))

    first, again, other_seed = run(3, "a"), run(3, "b"), run(4, "c")
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not all(
        np.array_equal(first[name], other_seed[name]) for name in first
    )  # the seed matters


_SYNC_BN_SCRIPT = """
import sys
import numpy as np
from keras_resnest.training import strategy as strategy_lib
strategy_lib.split_cpu(2)
strategy = strategy_lib.make_strategy("mirrored")
import keras, tensorflow as tf
from keras_resnest.layers.norm import batch_norm
from keras_resnest.training import recipe
with strategy.scope():
    model = keras.Sequential([keras.Input((4, 4, 1)), batch_norm(name="bn", synchronized=False)])
if sys.argv[1] == "sync":
    recipe.synchronize_batch_norm(model)
images = np.concatenate([np.zeros((2, 4, 4, 1)), np.ones((2, 4, 4, 1))]).astype("float32")
dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
batches = iter(strategy.experimental_distribute_dataset(dataset))
step = tf.function(lambda x: strategy.run(lambda b: model(b, training=True), args=(x,)))
step(next(batches))
print("moving_variance", float(model.get_layer("bn").moving_variance.numpy()[0]))
"""


def test_synchronized_batchnorm_uses_the_global_batch_statistics():
    # Replica 0 sees only zeros, replica 1 only ones: each replica's batch variance is 0, the
    # global batch's is 0.25. Moving variance after one step (momentum 0.9, from 1.0):
    # synchronized 0.9 + 0.1 * 0.25 = 0.925; per-replica statistics would give 0.9.
    def moving_variance(mode):
        proc = subprocess.run(
            [sys.executable, "-c", _SYNC_BN_SCRIPT, mode],
            env=train_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return float(re.search(r"moving_variance (\S+)", proc.stdout).group(1))

    assert moving_variance("sync") == pytest.approx(0.925, abs=1e-6)
    assert moving_variance("plain") == pytest.approx(0.9, abs=1e-6)
