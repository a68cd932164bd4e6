"""(r) What each model costs: parameters, CPU training steps/s at batch 8 on 256² crops, peak RSS of the training
process, beside the input pipeline's crops/s, so a user sees which model a faster device would starve.

Each model trains in its own process (its peak RSS is its own), from one cached batch of the bundled sample's
shards (no input cost), after two warm-up steps (tracing). Backbones start from random weights (`none`): the cost
does not depend on them. The input pipeline is measured alone, as trainer.train builds it (decode, paired
augmentation, batches). "input ÷ step" is how many times faster the pipeline feeds crops than the model eats
them here; a device that trains N× faster than these 2 cores needs it above N. ARCHS=multi,deconv (or
deeplabv3plus:resnet50) measures some of them.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.bench_train import BATCH, _sample_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = (("multi", None), ("deconv", None), ("deeplabv3plus", "mobilenetv2"), ("deeplabv3plus", "efficientnetv2b0"),
          ("deeplabv3plus", "resnet50"))

ONE = """
import json, resource, sys, time
import keras
from trainer import data, distribute, loop
from trainer.model import build_model, for_training
from trainer.train import TrainConfig

records, arch, backbone, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
meta = data.load_metadata(records)
keras.utils.set_random_seed(0)
model = build_model(meta.num_classes, meta.crop_size, 32, arch, meta.rgb_mean, meta.rgb_std,
                    backbone=backbone if backbone != "-" else "mobilenetv2", backbone_weights="none")
inputs, targets = data.strides_of(model)
one = data.make_dataset(records, "train", %(batch)d, training=True, inputs=inputs, targets=targets).take(1).cache()
optimizer = keras.optimizers.Adam(1e-3)
optimizer.build(model.trainable_variables)
weights = {name: (1.0 if name == "main" else 0.2) for name in model.output_names}
step = loop.Steps(model, optimizer, weights, meta.num_classes, distribute.make("auto"),
                  hard_pixels=TrainConfig.hard_pixels,  # the loss and the step trainer.train trains with
                  train_model=for_training(model))
batches = iter(one.repeat())
for _ in range(2):
    step.train(*next(batches))
t = time.perf_counter()
for _ in range(steps):
    logs, _ = step.train(*next(batches))
float(logs["loss"])
rate = steps / (time.perf_counter() - t)
print(json.dumps({"params": model.count_params(), "steps_s": rate,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""" % {"batch": BATCH}


def input_rate(records: str, batches: int = 60) -> float:
    """Crops/s of trainer.train's training pipeline (targets of the three-output models), alone."""
    from trainer import data

    ds = data.make_dataset(records, "train", BATCH, training=True, targets={"main": 1, "upsample": 1, "aux": 16})
    it = iter(ds)
    next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - t)


def one_model(records: str, arch: str, backbone: str | None, steps: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", ONE, records, arch, backbone or "-", str(steps)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
                          text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(steps: int = 10):
    with tempfile.TemporaryDirectory() as tmp:
        records = _sample_records(tmp)
        crops = input_rate(records)
        print(f"(r) each model's training cost on 2 CPU cores, batch {BATCH} of 256² crops, beside the input "
              f"pipeline ({crops:.0f} crops/s alone)")
        print(f"{'arch':>14} {'backbone':>17} {'parameters':>11} {'steps/s':>8} {'crops/s':>8} {'peak RSS':>9} "
              f"{'input ÷ step':>13}")
        chosen = os.environ.get("ARCHS", "").split(",")  # e.g. ARCHS=multi,deconv or ARCHS=deeplabv3plus:resnet50
        for arch, backbone in MODELS:
            if chosen != [""] and arch not in chosen and f"{arch}:{backbone}" not in chosen:
                continue
            r = one_model(records, arch, backbone, steps)
            rate = r["steps_s"] * BATCH
            print(f"{arch:>14} {backbone or '-':>17} {r['params']:>11,} {r['steps_s']:>8.2f} {rate:>8.1f} "
                  f"{r['rss_mib']:>6.0f} MiB {crops / rate:>12.0f}×", flush=True)


if __name__ == "__main__":
    main()
