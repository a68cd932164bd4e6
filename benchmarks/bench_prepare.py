"""(b) Prepare throughput (crops/s, source Mpx/s) on a synthetic VOC tree, side by side:

  - a plain Python loop doing the same decode, crop, lookup, encode and TFRecord write, no Beam;
  - `python -m pipelines.prepare --runner=DirectRunner` with 1 worker;
  - the same with `--direct_num_workers=2 --direct_running_mode=multi_processing`.

Goals: 1 worker ≥ 0.9× the plain loop; 2 workers ≥ 1.3× 1 worker. Every run is a fresh process, as a user runs
it: the loop's figure includes Python's start-up and its imports (NumPy, OpenCV, segprep), the Beam runs' include
Beam's (~0.9 s of imports here) and the pipeline's start. The loop is also timed inside this process, without any
start-up, and that ratio is printed too.
"""

import os
import struct
import subprocess
import sys
import tempfile
import time

import google_crc32c

from segprep import codec, layout, sample
from segprep.convert import ConvertConfig, convert_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES, SIDE, DISTINCT = 128, 2000, 8  # VOC-sized: ~8k crops; 8 generated pairs reused under 128 ids


def write_tree(root, pairs, ids):
    """A VOC tree whose ids take the (image bytes, mask bytes) of `pairs` in turn; the split list is train."""
    for sub in (layout.IMAGE_DIR, layout.MASK_DIR, layout.SPLIT_DIR):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i, image_id in enumerate(ids):
        with open(layout.image_path(root, image_id), "wb") as f:
            f.write(pairs[i % len(pairs)][0])
        with open(layout.mask_path(root, image_id), "wb") as f:
            f.write(pairs[i % len(pairs)][1])
    with open(layout.split_path(root, "train"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return ids


def make_tree(root):
    colors = sample.VOC.color_array()
    colors[255] = sample.VOC_BORDER_COLOR
    pairs = []
    for i in range(DISTINCT):
        image, classes = sample.make_pair(1000 + i, SIDE, SIDE)
        pairs.append((codec.encode_image(image, "jpeg", 90), codec.encode_image(colors[classes], "png")))
    return write_tree(root, pairs, [f"b{i:04d}" for i in range(NUM_IMAGES)])


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_record(f, data):
    """TFRecord framing, as TensorFlow writes it: what a script without Beam or TensorFlow would do."""
    head = struct.pack("<Q", len(data))
    f.write(head + struct.pack("<I", _masked_crc(head)) + data + struct.pack("<I", _masked_crc(data)))


def plain_loop(root, ids, out):
    config = ConvertConfig()
    crops = 0
    with open(out, "wb") as f:
        for image_id in ids:
            with open(layout.image_path(root, image_id), "rb") as a, open(layout.mask_path(root, image_id), "rb") as b:
                records, _ = convert_pair(image_id, a.read(), b.read(), config, training=True)
            for _, record in records:
                write_record(f, record.serialize())
            crops += len(records)
    return crops


def plain_loop_process(root, out):
    """The plain loop in a fresh process, as a user's script would run it; → seconds."""
    env = dict(os.environ, PYTHONPATH=REPO)
    code = ("import sys; from benchmarks.bench_prepare import plain_loop, read_ids; "
            "plain_loop(sys.argv[1], read_ids(sys.argv[1]), sys.argv[2])")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, root, out], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    return time.perf_counter() - t


def read_ids(root):
    with open(layout.split_path(root, "train")) as f:
        return layout.parse_split_list(f.read())


def beam_run(root, out, *extra):
    env = dict(os.environ, PYTHONPATH=REPO)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--input_dir", root, "--output_dir", out,
                           "--runner=DirectRunner", *extra], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    return time.perf_counter() - t


ROUNDS = 2  # each case runs this many times, interleaved; the best time counts (2 shared cores are noisy)


def main():
    main_images()
    main_tiles()


def main_images():
    two = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    cases = {"plain loop, fresh process": None,
             "DirectRunner, 1 worker": [],
             "DirectRunner, 2 workers": two,
             "1 worker, --shuffle beam": ["--shuffle=beam"],
             "2 workers, --shuffle beam": ["--shuffle=beam", *two]}
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "voc")
        ids = make_tree(root)
        mpx = NUM_IMAGES * SIDE * SIDE / 1e6
        t = time.perf_counter()
        crops = plain_loop(root, ids, os.path.join(tmp, "plain.tfrecord"))
        best["plain loop, in this process"] = time.perf_counter() - t
        for r in range(ROUNDS):
            for i, (name, extra) in enumerate(cases.items()):
                out = os.path.join(tmp, f"out{r}-{i}")
                secs = (plain_loop_process(root, out + ".tfrecord") if extra is None
                        else beam_run(root, out, *extra))
                best[name] = min(secs, best.get(name, secs))
    print(f"(b) prepare, {NUM_IMAGES} images of {SIDE}², {crops} crops, {os.cpu_count()} cores, best of {ROUNDS}:")
    for name, secs in best.items():
        print(f"    {name:28s} {secs:6.1f} s  {crops / secs:7.1f} crops/s  {mpx / secs:6.2f} source Mpx/s")
    loop, inside = best["plain loop, fresh process"], best["plain loop, in this process"]
    one, two_ = best["DirectRunner, 1 worker"], best["DirectRunner, 2 workers"]
    print(f"    1 worker / plain loop = {loop / one:.2f}× (goal ≥ 0.9×; {inside / one:.2f}× against the loop timed "
          f"without start-up); 2 workers / 1 worker = {one / two_:.2f}× (goal ≥ 1.3×)")
    print(f"    with --shuffle beam: 1 worker / plain loop = {loop / best['1 worker, --shuffle beam']:.2f}×, "
          f"2 workers / 1 worker = {best['1 worker, --shuffle beam'] / best['2 workers, --shuffle beam']:.2f}×")


TILES, TILE_H, TILE_W = 48, 3000, 4000  # large tiles: ~128 crops each (auto), 6,144 in all


def make_tiles_trees(tmp):
    """48 ids over 4 generated 3000×4000 tiles, twice: JPEG + PNG colour mask (VOC layout, decoded whole), and
    tiled TIFFs (JPEG-compressed 512² tiles, deflate colour mask) read by window with --window_size 2048."""
    from benchmarks.bench_memory import make_scale_tree

    jpeg_root = os.path.join(tmp, "tiles-jpeg")
    make_scale_tree(jpeg_root, TILES)
    tiff_root = os.path.join(tmp, "tiles-tiff")
    os.makedirs(os.path.join(tiff_root, "images", "train"))
    os.makedirs(os.path.join(tiff_root, "masks", "train"))
    import tifffile

    for image_id in read_ids(jpeg_root):
        with open(layout.image_path(jpeg_root, image_id), "rb") as f:
            image = codec.decode_image(f.read())
        with open(layout.mask_path(jpeg_root, image_id), "rb") as f:
            mask, _ = codec.decode_mask(f.read())
        tifffile.imwrite(os.path.join(tiff_root, "images", "train", f"{image_id}.tif"), image, photometric="rgb",
                         tile=(512, 512), compression="jpeg", compressionargs={"level": 90})
        tifffile.imwrite(os.path.join(tiff_root, "masks", "train", f"{image_id}.tif"), mask, photometric="rgb",
                         tile=(512, 512), compression="deflate")
    return jpeg_root, tiff_root


def plain_tiff_loop(root, out):
    """The plain loop over the TIFF tree: each pair decoded whole (tifffile), then as `plain_loop`."""
    config = ConvertConfig()
    names = sorted(os.listdir(os.path.join(root, "images", "train")))
    with open(out, "wb") as f:
        for name in names:
            with open(os.path.join(root, "images", "train", name), "rb") as a, \
                    open(os.path.join(root, "masks", "train", name), "rb") as b:
                records, _ = convert_pair(name[:-4], a.read(), b.read(), config, training=True)
            for _, record in records:
                write_record(f, record.serialize())


def main_tiles():
    tiff = ["--images", "images/{split}/{id}.tif", "--masks", "masks/{split}/{id}.tif", "--window_size", "2048"]
    env = dict(os.environ, PYTHONPATH=REPO)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_root, tiff_root = make_tiles_trees(tmp)
        loops = {"jpeg": "plain_loop(sys.argv[1], read_ids(sys.argv[1]), sys.argv[2])",
                 "tiff": "plain_tiff_loop(sys.argv[1], sys.argv[2])"}
        for r in range(ROUNDS):
            for path, root, flags in (("jpeg", jpeg_root, []), ("tiff", tiff_root, tiff)):
                t = time.perf_counter()
                code = "import sys; from benchmarks.bench_prepare import *; " + loops[path]
                proc = subprocess.run([sys.executable, "-c", code, root, os.path.join(tmp, "loop.tfrecord")],
                                      env=env, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(proc.stderr)
                loop = time.perf_counter() - t
                one = beam_run(root, os.path.join(tmp, f"out{r}{path}"), *flags)
                best[path, "loop"] = min(loop, best.get((path, "loop"), loop))
                best[path, "one"] = min(one, best.get((path, "one"), one))
    mpx = TILES * TILE_H * TILE_W / 1e6
    print(f"(b) prepare, {TILES} tiles of {TILE_H}×{TILE_W} (auto crops), best of {ROUNDS}; goal: 1 worker ≥ 0.9× "
          "the plain loop on both paths:")
    for path, name in (("jpeg", "JPEG + PNG, decoded whole"), ("tiff", "tiled TIFF, by 2048² window")):
        loop, one = best[path, "loop"], best[path, "one"]
        print(f"    {name:28s} plain loop {loop:5.1f} s ({mpx / loop:5.1f} Mpx/s)  1 worker {one:5.1f} s "
              f"({mpx / one:5.1f} Mpx/s)  = {loop / one:.2f}× the loop")


if __name__ == "__main__":
    main_tiles() if sys.argv[1:] == ["tiles"] else main()
