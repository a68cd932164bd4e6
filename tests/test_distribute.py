"""Distributed training on the CPU: MirroredStrategy over two logical devices, and MultiWorkerMirroredStrategy with
two local processes on 127.0.0.1. Each runs in its own interpreter (devices are fixed when TensorFlow starts)."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from pipelines import prepare


@pytest.fixture
def records(voc_tree, tmp_path):
    out = str(tmp_path / "records")
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--crop_size", "64",
                        "--crops_per_image", "6", "--num_shards", "2", "--runner=DirectRunner"]) == 0
    return out


def script(code, *args, env=None, timeout=600):
    """Runs `code` in a fresh interpreter with `args`; → its CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def last_json(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ONE_STEP = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from trainer import data, distribute, loop, train
from trainer.model import build_model

records = sys.argv[1]
meta = data.load_metadata(records)
x, y = next(iter(data.make_dataset(records, "val", 8, training=False, targets={"main": 1, "upsample": 1, "aux": 8})))
keras.utils.set_random_seed(0)
initial = build_model(21, 64, width=8).get_weights()
result = {}
for name, strategy in (("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
                       ("reversed", tf.distribute.OneDeviceStrategy("/cpu:0"))):  # the batch in reverse order
    if name == "reversed":
        x, y = (tf.nest.map_structure(lambda t: tf.reverse(t, [0]), v) for v in (x, y))
    placement = distribute.Placement(strategy, name, strategy.num_replicas_in_sync)
    with strategy.scope():
        model = build_model(21, 64, width=8)
        model.set_weights(initial)
        optimizer = keras.optimizers.SGD(1.0)  # the update is the gradient itself (see the test)
        optimizer.build(model.trainable_variables)
    steps = loop.Steps(model, optimizer, {"main": 1.0, "upsample": 0.2, "aux": 0.2}, 21, placement)
    batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)))))
    logs, cms = steps.train(*batch)
    result[name] = {"replicas": strategy.num_replicas_in_sync, "loss": float(logs["loss"]),
                    "pixels": int(cms["main"].numpy().sum()),
                    "weights": [w.tolist() for w in model.get_weights()]}
result["initial"] = [w.tolist() for w in initial]
print(json.dumps(result))
"""


def test_mirrored_over_two_devices_takes_the_same_step_as_one_device(records):
    result = last_json(script(ONE_STEP, records))
    one, two, rev = result["one"], result["mirrored"], result["reversed"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["pixels"] == two["pixels"] > 0  # the same global batch, split over the replicas
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)  # loss over the global batch, synchronised BN
    # And the same update, weight by weight. Plain SGD at lr 1, so the update is the gradient: a gradient summed
    # rather than averaged over the replicas would show as twice the step (Adam's first step is ±lr whatever the
    # gradient's size, which hides that). Float32 sums in another order (two half-batches, then an all-reduce)
    # round differently, and the model amplifies that in its first layers (measured: the same batch reversed on
    # one device moves the stem's step by up to 0.5% too), so each weight's step may differ from one device's by
    # a few times what the reversed batch's does, and no more.
    assert len(one["weights"]) == len(two["weights"]) == len(rev["weights"]) > 0
    updated = 0
    for i, a, b, r in zip(result["initial"], one["weights"], two["weights"], rev["weights"]):
        i, a, b, r = (np.array(v) for v in (i, a, b, r))
        step = np.abs(a - i).max()
        assert np.abs(b - a).max() <= max(1e-5, 4 * np.abs(r - a).max()), (np.abs(b - a).max(), np.abs(r - a).max())
        updated += step > 1e-3
    assert updated > len(one["weights"]) // 2  # the step moved most weights: the comparison means something


MIRRORED_CLI = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trainer import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_train_with_mirrored_names_the_strategy_and_scales_batch_and_lr(records, tmp_path):
    proc = script(MIRRORED_CLI, "--data_dir", records, "--model_dir", str(tmp_path / "run"), "--epochs", "1",
                  "--batch_size", "2", "--lr", "0.002", "--width", "8", "--distribution_strategy", "mirrored")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert first.startswith("train: mirrored, 2 replicas; global batch 4 (2 per replica), peak lr 0.004"), first
    assert (tmp_path / "run" / "model.keras").exists()


def _reserve_ports(n):
    """`n` ports on 127.0.0.1, held for as long as the sockets stay open: each is bound with SO_REUSEPORT and never
    listens, so only sockets that ask for SO_REUSEPORT too (the workers' gRPC servers, with TF_GRPC_REUSE_PORT=1)
    can bind it, and no other process can take the port between picking and use."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    return socks


WORKER = """
import json, os, signal, sys
import keras
from trainer import data, distribute, train, training
from trainer.model import build_model

records, run, epochs, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
placement = distribute.make("multi_worker_mirrored")


class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):  # after the epoch's backup is written
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


keras.utils.set_random_seed(0)
with placement.strategy.scope():
    model = build_model(21, 64, width=8)
cfg = train.TrainConfig(epochs=epochs, batch_size=2, lr=2e-3)
history = training.fit(model, records, run, cfg, placement=placement, verbose=0,
                    extra_callbacks=[Kill()] if kill_at >= 0 else None)
print(json.dumps({"epochs": history.epoch, "loss": history.history["loss"][-1], "chief": placement.is_chief,
                  "replicas": placement.replicas}))
"""


def _cluster(records, run, epochs, kill_at, tmp):
    held = _reserve_ports(2)
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in held]}
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp), TF_GRPC_REUSE_PORT="1",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, records, run, str(epochs), str(kill_at)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out, err))
    for s in held:
        s.close()
    return results


def test_multi_worker_trains_resumes_and_only_the_chief_writes(records, tmp_path):
    run = str(tmp_path / "run")
    tmp = tmp_path / "worker_tmp"
    tmp.mkdir()
    killed = _cluster(records, run, 3, 0, tmp)  # both workers are SIGKILLed after the first epoch
    assert [r[0] for r in killed] == [-signal.SIGKILL] * 2, [r[2][-2000:] for r in killed]
    assert os.path.isdir(f"{run}/backup")
    results = _cluster(records, run, 3, -1, tmp)
    for code, out, err in results:
        assert code == 0, err[-3000:]
    done = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert [d["chief"] for d in done] == [True, False] and {d["replicas"] for d in done} == {2}
    assert all(d["epochs"] == [1, 2] for d in done)  # resumed after epoch 0, on both workers
    assert done[0]["loss"] == pytest.approx(done[1]["loss"], rel=1e-5)  # one model, reduced across workers
    assert sorted(os.listdir(run)) == [".segprep-run", "best.keras", "log.csv", "model.keras", "segprep.json",
                                       "serving", "tensorboard"]
    rows = open(f"{run}/log.csv").read().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    # The non-chief's temp copies are gone, the killed run's too. (TensorFlow's autograph leaves its own
    # __autograph_generated_file*.py behind when killed: its cleanup is an atexit hook.)
    assert [n for n in os.listdir(tmp) if not n.startswith("__autograph_generated_file")] == []


def test_auto_shard_policy_gives_whole_files_only_when_every_worker_gets_one():
    from tensorflow.data.experimental import AutoShardPolicy

    from trainer import distribute

    assert distribute.shard_policy(num_files=8, workers=2) == AutoShardPolicy.FILE
    assert distribute.shard_policy(num_files=1, workers=2) == AutoShardPolicy.DATA
    assert distribute.shard_policy(num_files=8, workers=1) == AutoShardPolicy.OFF
