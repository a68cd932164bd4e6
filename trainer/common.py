"""Names and settings the command lines offer, kept apart from the modules that need TensorFlow so that parsing
flags is quick."""

import dataclasses

from segprep import metadata as md
from segprep import storage

ARCHS = ("multi", "deconv")  # trainer.model
ARCH_OUTPUTS = {"multi": ("main", "upsample", "aux"), "deconv": ("main",)}  # trainer.model's output names
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")  # trainer.distribute
BEST_METRIC = "val_main_miou"  # trainer.loop: what best.keras is the best of


@dataclasses.dataclass(frozen=True)
class Augment:
    """Paired augmentation: one random draw, applied to image and mask alike (masks nearest-neighbour only)."""

    flip: bool = True
    scale: tuple[float, float] | None = None  # e.g. (0.75, 1.25)
    rotate_degrees: float = 0.0


class DataError(ValueError):
    """The data dir cannot be read as prepare's output."""


def load_metadata(data_dir: str) -> dict:
    """metadata.json of prepare's output dir; `DataError` saying what is wrong when it cannot be read. Local dirs
    are read without TensorFlow (so a wrong --data_dir is answered at once), gs:// ones through tf.io.gfile."""
    path = f"{data_dir.rstrip('/')}/metadata.json"
    if not exists(path):
        root = data_dir.rstrip("/")
        if any(exists(f"{root}/{marker}") for marker in ("JPEGImages", "ImageSets", "SAMPLE_VERSION")):
            raise DataError(f"--data_dir {data_dir} is a dataset, not prepare's output: make the records with "
                            f"`python -m pipelines.prepare --input_dir {data_dir} --output_dir data/records` and "
                            "pass --data_dir data/records.")
        why = ("it holds shards but no metadata.json: the prepare run did not finish; re-run it with --overwrite"
               if glob(f"{root}/*.tfrecord*") else "it holds no prepare output")
        raise DataError(f"No {path}: {why}. Make it with `python -m pipelines.prepare --input_dir DATASET "
                        f"--output_dir {data_dir}`.")
    try:
        return md.parse(read_bytes(path), path)
    except md.MetadataError as e:
        raise DataError(str(e)) from None


def _gfile():
    from trainer.lazy import tf  # TensorFlow's quiet import (trainer/lazy.py)

    return tf.io.gfile


# The trainer's file access: segprep.storage with remote paths through tf.io.gfile (see segprep/storage.py). Local
# paths need no TensorFlow, so a wrong local --data_dir is answered before it loads.
files = storage.Files("tensorflow", gfile=_gfile)
exists = files.exists
isdir = files.isdir
listdir = files.listdir
read_bytes = files.read_bytes
glob = files.glob
