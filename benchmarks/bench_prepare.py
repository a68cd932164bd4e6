"""(b) Prepare throughput (crops/s, source Mpx/s) on a synthetic VOC tree, side by side:

  - a plain Python loop doing the same decode, crop, lookup, encode and TFRecord write, no Beam;
  - `python -m pipelines.prepare --runner=DirectRunner` with 1 worker;
  - the same with `--direct_num_workers=2 --direct_running_mode=multi_processing`.

Goals: 1 worker ≥ 0.7× the plain loop; 2 workers ≥ 1.3× 1 worker. Each Beam run is a fresh process, as a user
runs it, so the figures include Beam's start-up.
"""

import os
import subprocess
import sys
import tempfile
import time

from apache_beam.io.tfrecordio import _TFRecordUtil

from segprep import codec, layout, sample
from segprep.convert import ConvertConfig, convert_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES, SIDE, DISTINCT = 128, 2000, 8  # VOC-sized: ~8k crops; 8 generated pairs reused under 128 ids


def make_tree(root):
    os.makedirs(os.path.join(root, layout.IMAGE_DIR), exist_ok=True)
    os.makedirs(os.path.join(root, layout.MASK_DIR), exist_ok=True)
    os.makedirs(os.path.join(root, layout.SPLIT_DIR), exist_ok=True)
    colors = sample.VOC.color_array()
    colors[255] = sample.VOC_BORDER_COLOR
    pairs = []
    for i in range(DISTINCT):
        image, classes = sample.make_pair(1000 + i, SIDE, SIDE)
        pairs.append((codec.encode_image(image, "jpeg", 90), codec.encode_image(colors[classes], "png")))
    ids = []
    for i in range(NUM_IMAGES):
        image_id = f"b{i:04d}"
        ids.append(image_id)
        with open(layout.image_path(root, image_id), "wb") as f:
            f.write(pairs[i % DISTINCT][0])
        with open(layout.mask_path(root, image_id), "wb") as f:
            f.write(pairs[i % DISTINCT][1])
    with open(layout.split_path(root, "train"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return ids


def plain_loop(root, ids, out):
    config = ConvertConfig()
    crops = 0
    with open(out, "wb") as f:
        for image_id in ids:
            with open(layout.image_path(root, image_id), "rb") as a, open(layout.mask_path(root, image_id), "rb") as b:
                records, _ = convert_pair(image_id, a.read(), b.read(), config, training=True)
            for _, record in records:
                _TFRecordUtil.write_record(f, record.serialize())
            crops += len(records)
    return crops


def beam_run(root, out, *extra):
    env = dict(os.environ, PYTHONPATH=REPO)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--input_dir", root, "--output_dir", out,
                           "--runner=DirectRunner", *extra], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    return time.perf_counter() - t


def main():
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "voc")
        ids = make_tree(root)
        mpx = NUM_IMAGES * SIDE * SIDE / 1e6
        t = time.perf_counter()
        crops = plain_loop(root, ids, os.path.join(tmp, "plain.tfrecord"))
        t_plain = time.perf_counter() - t
        two = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
        t_one = beam_run(root, os.path.join(tmp, "one"))
        t_two = beam_run(root, os.path.join(tmp, "two"), *two)
        # A fixed shard count needs no side input, so assigning shards fuses into the cutting stage.
        t_one_fixed = beam_run(root, os.path.join(tmp, "one_fixed"), "--num_shards=2")
        t_two_fixed = beam_run(root, os.path.join(tmp, "two_fixed"), "--num_shards=2", *two)
    print(f"(b) prepare, {NUM_IMAGES} images of {SIDE}², {crops} crops, {os.cpu_count()} cores:")
    for name, secs in (("plain loop, no Beam", t_plain), ("DirectRunner, 1 worker", t_one),
                       ("DirectRunner, 2 workers", t_two), ("1 worker, --num_shards=2", t_one_fixed),
                       ("2 workers, --num_shards=2", t_two_fixed)):
        print(f"    {name:26s} {secs:6.1f} s  {crops / secs:7.1f} crops/s  {mpx / secs:6.2f} source Mpx/s")
    print(f"    1 worker / plain loop = {t_plain / t_one:.2f}× (goal ≥ 0.7×); 2 workers / 1 worker = "
          f"{t_one / t_two:.2f}× with automatic shards, {t_one_fixed / t_two_fixed:.2f}× with --num_shards "
          f"(goal ≥ 1.3×)")


if __name__ == "__main__":
    main()
