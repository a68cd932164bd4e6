"""(i) Training steps/s of the default model on one device vs MirroredStrategy over 2 logical CPU devices, same
global batch (8), side by side in one process. On one CPU both share the same cores, so this measures the cost of
distribution (splitting the batch, synchronised BatchNorm, gradient all-reduce), not a speed-up; on GPUs the
mirrored path is the one that scales.
"""

import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Steps/s of the default model at global batch 8 under a trainer Placement; shared with bench_onednn. Imports
# happen inside, so a caller can configure TensorFlow's devices first.
STEP_RATE = """
def steps_per_second(records, placement, warmup=3, measured=15):
    import time
    import keras
    from trainer import data, loop
    from trainer.model import build_model, for_training

    with placement.strategy.scope():
        model = build_model(21, 256)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
    steps = loop.Steps(model, optimizer, {"main": 1.0, "upsample": 0.2, "aux": 0.2}, 21, placement,
                       train_model=for_training(model))  # the step trainer.train runs
    ds = data.make_dataset(records, "train", 8, training=True, targets={"main": 1, "upsample": 1, "aux": 8})
    batches = iter(placement.strategy.experimental_distribute_dataset(ds.take(1).cache().repeat()))
    for _ in range(warmup):
        steps.train(*next(batches))
    t = time.perf_counter()
    for _ in range(measured):
        logs, _ = steps.train(*next(batches))
    float(logs["loss"])
    return measured / (time.perf_counter() - t)
"""

CODE = STEP_RATE + """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trainer import distribute

result = {}
for name, strategy in (("one device", tf.distribute.OneDeviceStrategy("/cpu:0")),
                       ("mirrored, 2 logical CPUs", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    placement = distribute.Placement(strategy, name, strategy.num_replicas_in_sync)
    result[name] = steps_per_second(sys.argv[1], placement)
print(json.dumps(result))
"""


def main():
    with tempfile.TemporaryDirectory() as tmp:
        records = os.path.join(tmp, "records")
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([sys.executable, "-m", "pipelines.prepare", "--output_dir", records, "--runner=DirectRunner"],
                       check=True, cwd=REPO, capture_output=True, env=env)
        proc = subprocess.run([sys.executable, "-c", CODE, records], env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
    rates = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = rates.values()
    print(f"(i) training steps/s, default model, global batch 8: one device {one:.2f}, mirrored over 2 logical CPU "
          f"devices {two:.2f} → {two / one:.2f}× (both on the same 2 cores: what splitting the batch, synchronised "
          "BatchNorm and the all-reduce cost or gain, not more hardware)")


if __name__ == "__main__":
    main()
