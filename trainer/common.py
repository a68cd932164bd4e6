"""Names and settings the command lines offer, kept apart from the modules that need TensorFlow so that parsing
flags is quick."""

import dataclasses

from segprep.formats import metadata as md
from segprep.formats.shards import is_shard
from segprep import storage

ARCHS = ("multi", "deconv", "deeplabv3plus")  # trainer.model
ARCH_OUTPUTS = {"multi": ("main", "upsample", "aux"), "deconv": ("main",),
                "deeplabv3plus": ("main", "upsample", "aux")}  # trainer.model's output names
BACKBONES = ("mobilenetv2", "resnet50", "efficientnetv2b0")  # trainer.backbones, for --arch deeplabv3plus
# The revision of trainer.model's own layers ("multi", "deconv"): a default run dir of another revision is
# another dir, so a changed model never resumes from the checkpoint of an earlier one.
MODEL_REVISION = 2
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")  # trainer.distribute
BEST_METRIC = "val_main_miou"  # trainer.loop: what best.keras is the best of
CROP_WEIGHT = "_crop_weight"  # a target beside the outputs' masks: each crop's loss weight (--class_weights)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Paired augmentation: one random draw, applied to image and mask alike (masks nearest-neighbour only). The
    defaults are `trainer.train`'s: flips, scale in [0.75, 1.25], rotation up to 15°. `Augment(scale=None,
    rotate_degrees=0)` flips only; `Augment(False, None, 0)` does nothing."""

    flip: bool = True
    scale: tuple[float, float] | None = (0.75, 1.25)  # None: no scaling
    rotate_degrees: float = 15.0  # 0: no rotation

    def __post_init__(self):
        if self.scale is not None:
            if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] or self.scale[1] == float("inf"):
                raise ValueError("Argument `scale` must be None or (MIN, MAX) with 0 < MIN <= MAX, finite. "
                                 f"Received: scale={self.scale}")
        if not 0 <= self.rotate_degrees <= 180:
            raise ValueError(f"Argument `rotate_degrees` must be in [0, 180]. Received: "
                             f"rotate_degrees={self.rotate_degrees}")


def class_iou(cm) -> tuple:
    """Per-class IoU of a (C, C) confusion matrix (rows = truth): → (iou, counted), `counted` marking the classes
    whose union is not empty (present in the truth or predicted); the others' IoU is NaN. The one definition the
    training loop's logs, best.keras and trainer.evaluate share, as keras.metrics.MeanIoU computes it."""
    import numpy as np

    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    counted = union > 0
    return np.divide(tp, union, out=np.full_like(tp, np.nan), where=counted), counted


def miou(cm) -> float:
    """Mean IoU over the classes `class_iou` counts (0 when there are none)."""
    iou, counted = class_iou(cm)
    return float(iou[counted].mean()) if counted.any() else 0.0


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
               if any(is_shard(p) for p in glob(f"{root}/*")) else "it holds no prepare output")
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
