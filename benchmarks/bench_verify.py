"""(n) segprep.verify on 1 GiB of shards, --quick (framing only: length checksums, bodies seeked over) against the
full check (every checksum, schema, image and mask decoded), side by side.

The shards are the bundled sample's real records, repeated until the output holds 1 GiB, in 8 shards, with a
metadata.json that lists them: verify sees a whole, valid output.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from segprep.formats import tfrecord

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 1 << 30
SHARDS = 8


def make_output(tmp: str) -> tuple[str, int, int]:
    sample_out = os.path.join(tmp, "sample")
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-m", "pipelines.prepare", "--output_dir", sample_out, "--image_format", "png",
                    "--runner=DirectRunner"], env=env, check=True, capture_output=True)
    meta = json.load(open(os.path.join(sample_out, "metadata.json")))
    pool = [data for name in meta["splits"]["train"]["shards"]
            for _, data in tfrecord.read(os.path.join(sample_out, name))]
    out = os.path.join(tmp, "big")
    os.makedirs(out)
    names, counts, size, total = [], [], 0, 0
    for s in range(SHARDS):
        name = f"train-{s:05d}-of-{SHARDS:05d}.tfrecord"
        count = 0
        with open(os.path.join(out, name), "wb") as f:
            while size < TARGET * (s + 1) // SHARDS:
                size += tfrecord.write(f, pool[total % len(pool)])
                count += 1
                total += 1
        names.append(name)
        counts.append(count)
    meta["splits"] = {"train": dict(meta["splits"]["train"], shards=names, shard_records=counts, records=total)}
    with open(os.path.join(out, "metadata.json"), "w") as f:
        json.dump(meta, f)
    return out, total, size


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out, count, size = make_output(tmp)
        env = dict(os.environ, PYTHONPATH=REPO)
        times = {}
        for mode, flags in (("--quick", ["--quick"]), ("full", [])):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "segprep.verify", out, *flags], env=env,
                                  capture_output=True, text=True)
            times[mode] = time.perf_counter() - t
            if proc.returncode:
                sys.exit(proc.stdout + proc.stderr)
        print(f"(n) segprep.verify on {size / 2 ** 30:.2f} GiB of shards ({count:,} records, {SHARDS} shards), "
              f"{os.cpu_count()} cores, fresh process each:")
        for mode, secs in times.items():
            print(f"    {mode:8s} {secs:6.1f} s  {size / 2 ** 20 / secs:8.0f} MiB/s  {count / secs:9,.0f} records/s")
        print(f"    full / --quick = {times['full'] / times['--quick']:.0f}×")


if __name__ == "__main__":
    main()
