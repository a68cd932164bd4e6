"""Distribution strategies by TF Model Garden's names, and who writes the run dir.

    auto                   MirroredStrategy over the GPUs when there is more than one, else the default strategy
    one_device             OneDeviceStrategy on the first GPU (or the CPU)
    mirrored               MirroredStrategy: every GPU of this machine (or the CPU)
    multi_worker_mirrored  MultiWorkerMirroredStrategy: every worker of TF_CONFIG, each with its GPUs
    tpu                    TPUStrategy on --tpu ADDRESS ("local" on a TPU VM; a name or grpc:// address otherwise)

With several workers only the chief writes the run dir; the others write what the collective steps need them to
write (checkpoints) into a temp dir of their own, which they remove (Keras's documented multi-worker pattern).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import tensorflow as tf

from trainer.common import STRATEGIES  # noqa: E402,F401 - re-exported
from trainer.common import files


@dataclasses.dataclass
class Placement:
    """The strategy, a description for the first line of a run, and this process's role."""

    strategy: tf.distribute.Strategy
    name: str
    replicas: int
    workers: int = 1
    worker_index: int = 0
    is_tpu: bool = False

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    def describe(self) -> str:
        workers = f" on {self.workers} workers" if self.workers > 1 else ""
        return f"{self.name}, {self.replicas} replica{'s' if self.replicas != 1 else ''}{workers}"

    def write_dir(self, model_dir: str, what: str) -> str:
        """Where this process writes `what` (e.g. "backup"): in the run dir for the chief, in a temp dir of its own
        for other workers (removed by `cleanup` and `remove_temp`)."""
        if self.is_chief:
            return f"{model_dir}/{what}"
        return os.path.join(self._temp_root(model_dir), what)

    def _temp_root(self, model_dir: str) -> str:
        # The same for every attempt of this run on this worker, so a restarted worker clears what a killed one left.
        digest = hashlib.sha1(model_dir.encode()).hexdigest()[:10]
        return os.path.join(tempfile.gettempdir(), f"segprep-{digest}-worker{self.worker_index}")

    def cleanup(self, path: str) -> None:
        if not self.is_chief and files.exists(path):
            files.rmtree(path) if files.isdir(path) else files.remove([path])

    def remove_temp(self, model_dir: str) -> None:
        """Removes this worker's temp dir (nothing for the chief)."""
        if not self.is_chief and os.path.exists(self._temp_root(model_dir)):
            shutil.rmtree(self._temp_root(model_dir), ignore_errors=True)


def _task() -> tuple[int, int]:
    """(workers, this worker's index, chief first) from TF_CONFIG."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = config.get("cluster", {})
    task = config.get("task", {})
    chiefs = len(cluster.get("chief", []))
    workers = chiefs + len(cluster.get("worker", []))
    kind, index = task.get("type", "chief" if chiefs else "worker"), int(task.get("index", 0))
    return max(1, workers), (index if kind == "chief" else chiefs + index)


def make(name: str = "auto", tpu: str | None = None) -> Placement:
    """The strategy called `name` (see the module docstring). Must run before anything else touches TensorFlow's
    devices for multi_worker_mirrored and tpu."""
    if name not in STRATEGIES:
        raise ValueError(f"distribution_strategy must be one of {', '.join(STRATEGIES)}. Received: {name!r}")
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        return Placement(strategy, "tpu", strategy.num_replicas_in_sync, is_tpu=True)
    if name == "multi_worker_mirrored":
        workers, index = _task()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Placement(strategy, name, strategy.num_replicas_in_sync, workers, index)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        device = gpus[0].name if gpus else "/cpu:0"
        return Placement(tf.distribute.OneDeviceStrategy(device), f"one_device ({device})", 1)
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
        return Placement(strategy, "mirrored", strategy.num_replicas_in_sync)
    device = "GPU" if gpus else "CPU"
    return Placement(tf.distribute.get_strategy(), f"default ({device})", 1)


def shard_policy(num_files: int, workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE when every worker can get whole shards, else DATA (each worker reads all and keeps its share)."""
    if workers <= 1:
        return tf.data.experimental.AutoShardPolicy.OFF
    policy = tf.data.experimental.AutoShardPolicy
    return policy.FILE if num_files >= workers else policy.DATA
