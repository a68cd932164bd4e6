"""The spill path (pipelines/spill.py): shard slices and buckets, spill files read back in order, the same bytes as
Beam's shuffle on 1 and 2 workers, nothing left behind, and a job graph that does not carry the ids."""

import os
import shutil
import random
import struct

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import read_records, shard_files
from pipelines import prepare, spill
from pipelines.shards import WriteShards, crop_hashes, shard_of
from segprep import layout
from segprep.formats.shards import TEMP_MARKER, TEMP_PREFIX, is_shard

BEAM = ["--runner=DirectRunner"]


def run(tree_root, out, *flags):
    return prepare.run(["--input_dir", tree_root, "--output_dir", str(out), *flags, *BEAM])


def shard_bytes(out, split):
    return [(os.path.basename(f), open(f, "rb").read()) for f in shard_files(str(out), split)]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65, 100, 1000])
def test_a_shards_hashes_lie_in_its_buckets_and_shards_are_contiguous_slices(n):
    rng = random.Random(n)
    edges = [0, 2**64 - 1] + [((s << 64) + n - 1) // n + d for s in range(1, min(n, 50)) for d in (-1, 0, 1)]
    hashes = edges + [rng.getrandbits(64) for _ in range(3000)]
    for h in hashes:
        s = shard_of(h, n)
        assert 0 <= s < n
        assert spill.bucket_of(h) in spill.shard_buckets(s, n)
    ordered = sorted(hashes)
    assert [shard_of(h, n) for h in ordered] == sorted(shard_of(h, n) for h in ordered)  # monotone: slices
    assert set(spill.shard_buckets(0, n)) | set(spill.shard_buckets(n - 1, n)) >= {0, 2**spill.BUCKET_BITS - 1}


def _spill_file(path, records):
    with open(path, "wb") as f:
        for shard_hash, order, data in records:
            f.write(struct.pack("<QQQI", shard_hash, order, len(data) % 3, len(data)) + data)  # image key: length % 3


def test_read_shard_takes_its_records_from_every_file_in_order_and_reports_a_cut_file(tmp_path):
    rng = random.Random(0)
    records = [(rng.getrandbits(64), rng.getrandbits(64), os.urandom(rng.randrange(0, 50))) for _ in range(400)]
    paths = []
    for i in range(3):  # three bundles' files
        paths.append(str(tmp_path / f"{i}.spill"))
        _spill_file(paths[-1], records[i::3])
    refs = tuple(spill.SpillRef("train", 0, p, 0, 0) for p in paths)
    for shard in range(4):
        got = list(spill.read_shard(spill.ShardTask("train", shard, 4, refs)))
        want = [d for _, _, d in sorted((o, h, d) for h, o, d in records if shard_of(h, 4) == shard)]
        assert got == want
        # The crops of a tile that failed in another window (image key 1 here) are left out, the rest kept.
        got = list(spill.read_shard(spill.ShardTask("train", shard, 4, refs), failed=frozenset({1})))
        assert got == [d for d in want if len(d) % 3 != 1] and len(got) < len(want)
    with open(paths[1], "r+b") as f:
        f.truncate(os.path.getsize(paths[1]) - 3)
    with pytest.raises(OSError, match="cut short"):
        for shard in range(4):
            list(spill.read_shard(spill.ShardTask("train", shard, 4, refs)))


def test_spill_stages_under_test_pipeline_write_every_crop_once(tmp_path):
    crops = [("train", (f"im{i % 7}", i, f"record-{i}".encode())) for i in range(200)]
    crops += [("val", ("v", i, f"v-{i}".encode())) for i in range(5)]
    spill_dir, temp = tmp_path / "spill", tmp_path / "temp"
    spill_dir.mkdir()
    with BeamTestPipeline(runner="FnApiRunner") as p:
        results = (p
                   | beam.Create(crops)
                   | spill.SpillCrops(str(spill_dir), seed=3)
                   | spill.PlanShards(num_shards=5)
                   | WriteShards(str(temp), records_of=spill.spilled_records))
        assert_that(results | beam.Filter(lambda r: r.records > 0) | beam.Map(lambda r: (r.split, r.shard, r.num_shards)),
                    equal_to(sorted({(split, shard_of(crop_hashes(3, split, image_id, k)[0], 5), 5)
                                     for split, (image_id, k, _) in crops})))
    for split, n_crops in (("train", 200), ("val", 5)):
        names = sorted(n for n in os.listdir(temp) if n.startswith(split + "-"))
        got = []
        for name in names:
            shard = int(name.split("-")[1])
            data = [d for _, d in _read_frames(temp / name)]
            keys = [crop_hashes(3, split, *_id_k(split, d)) for d in data]
            assert all(shard_of(h, 5) == shard for h, _ in keys)
            assert [o for _, o in keys] == sorted(o for _, o in keys)
            got += data
        assert len(got) == n_crops == len(set(got))


def _id_k(split, data):
    k = int(data.decode().rsplit("-", 1)[1])
    return (f"im{k % 7}", k) if split == "train" else ("v", k)


def _read_frames(path):
    from segprep.formats import tfrecord
    return list(tfrecord.read(str(path)))


def test_spill_and_beam_shuffle_write_the_same_bytes_on_1_and_2_workers(voc_tree, tmp_path):
    flags = ["--crop_size", "40", "--crops_per_image", "9", "--num_shards", "3", "--compress"]
    two = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    assert run(voc_tree.root, tmp_path / "spill1", *flags, "--shuffle", "spill") == 0
    assert run(voc_tree.root, tmp_path / "spill2", *flags, "--shuffle", "spill", *two) == 0
    assert run(voc_tree.root, tmp_path / "beam1", *flags, "--shuffle", "beam") == 0
    for split in ("train", "val"):
        want = shard_bytes(tmp_path / "spill1", split)
        assert len(want) == 3 and sum(len(read_records([str(tmp_path / "spill1" / n)])) for n, _ in want) > 0
        assert shard_bytes(tmp_path / "spill2", split) == want
        assert shard_bytes(tmp_path / "beam1", split) == want
    for out in ("spill1", "spill2", "beam1"):  # the spill files went with the temp dir
        assert not [n for n in os.listdir(tmp_path / out) if n.startswith(TEMP_PREFIX)]


def test_spill_dir_flag_is_used_and_only_our_files_are_removed(voc_tree, tmp_path):
    spill_dir = tmp_path / "scratch"
    spill_dir.mkdir()
    (spill_dir / "users-file.txt").write_text("not ours")
    seen = []
    real_rmtree = prepare.shutil.rmtree
    prepare.shutil.rmtree = lambda path, **kw: (seen.append(path), real_rmtree(path, **kw))
    try:
        assert run(voc_tree.root, tmp_path / "out", "--crop_size", "64", "--spill_dir", str(spill_dir)) == 0
    finally:
        prepare.shutil.rmtree = real_rmtree
    assert os.listdir(spill_dir) == ["users-file.txt"]  # the run's own folder inside it is gone, nothing else
    ours = [p for p in seen if "segprep-spill-" in str(p)]
    assert len(ours) == 1 and os.path.dirname(ours[0]) == str(spill_dir)  # the spill files went there
    assert len(read_records(shard_files(str(tmp_path / "out"), "train"))) > 0


def test_the_job_graph_does_not_carry_the_ids_of_a_million_id_list(tmp_path):
    root = tmp_path / "voc"
    (root / layout.SPLIT_DIR).mkdir(parents=True)
    ids = [f"aerial_{i:07d}" for i in range(1_000_000)]
    (root / layout.SPLIT_DIR / "train.txt").write_text("\n".join(ids) + "\n")
    (root / layout.SPLIT_DIR / "val.txt").write_text("\n".join(ids[:1000]) + "\n")
    for shuffle in ("spill", "beam"):
        job = prepare.plan(["--input_dir", str(root), "--output_dir", str(tmp_path / "out"), "--shuffle", shuffle,
                            *BEAM])
        assert job.spec.listed == {"train": 1_000_000, "val": 1000}
        proto = prepare.pipeline(job, spill_dir=str(tmp_path / "spill")).to_runner_api().SerializeToString()
        assert len(proto) < 300_000, f"{len(proto):,} bytes"  # the ids alone are 14 MB
        assert b"aerial_0999999" not in proto


def test_a_crashed_runs_temp_dir_and_spill_files_are_named_by_verify_and_removed_by_overwrite(voc_tree, tmp_path):
    from segprep import verify

    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64") == 0
    crashed = out / (TEMP_PREFIX + "abc123") / "spill"  # as a killed run leaves it: its marker first
    crashed.mkdir(parents=True)
    (crashed.parent / TEMP_MARKER).write_text('{"written_by": "segprep pipelines.prepare"}')
    (crashed / "0001.spill").write_bytes(b"x" * 100)
    (crashed.parent / "train-00000-of-00001.tfrecord").write_bytes(b"")
    (out / (TEMP_PREFIX + "def456") / "spill").mkdir(parents=True)  # killed before it wrote a file
    mine = out / (TEMP_PREFIX + "mine")  # a user's folder that happens to look like one: no marker
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    problems, _ = verify.verify(str(out), quick=True)
    assert problems == [f"{out}/{TEMP_PREFIX}{name}: temp dir of an unfinished run (prepare --overwrite "
                        "removes it)" for name in ("abc123", "def456")] + [
        f"{mine}: named like a run's temp dir, but without segprep's marker in it: prepare --overwrite leaves it; "
        "remove it yourself if it is not yours"]
    assert run(voc_tree.root, out, "--crop_size", "64", "--overwrite") == 0
    assert [n for n in os.listdir(out) if n.startswith(TEMP_PREFIX)] == [mine.name]
    assert (mine / "thesis.tex").read_text() == "years of work"
    shutil.rmtree(mine)
    assert verify.verify(str(out), quick=True)[0] == []


def _stage(out, stage):
    """Whether a running prepare into `out` has reached `stage`: "started" (its temp dir exists) or "writing"
    (spill files or shards are being written in it)."""
    temps = [os.path.join(out, n) for n in os.listdir(out) if n.startswith(TEMP_PREFIX)] \
        if os.path.isdir(out) else []
    if stage == "started":
        return bool(temps)
    return any(files for t in temps for _, _, files in os.walk(t))


@pytest.mark.parametrize("stage", ["started", "writing"])
def test_a_sigkilled_prepare_leaves_no_shard_and_a_rerun_writes_the_bytes_of_a_clean_run(voc_tree, tmp_path, stage):
    """A real SIGKILL (no finally block runs) as soon as the run's temp dir exists, or while its spill files and
    shards are being written: OUT holds no shard; the same command, and then --overwrite, write exactly the shards
    of a run that was never killed."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    flags = ["--crop_size", "64", "--crops_per_image", "40", "--num_shards", "3"]
    assert run(voc_tree.root, tmp_path / "clean", *flags) == 0
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "pipelines.prepare", "--input_dir", voc_tree.root, "--output_dir", out, *flags, *BEAM]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not _stage(out, stage):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "prepare finished before it could be killed"
    assert not [n for n in os.listdir(out) if is_shard(n) or n == "metadata.json"]
    # The same command runs (the killed run left no shard to mix with), names what the killed one left behind,
    # and writes the clean run's bytes; --overwrite does too and removes the leftovers.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    err = again.stderr.strip().splitlines()
    assert again.returncode == 0 and len(err) == 1, again.stderr
    assert "holds the temp files of an unfinished run (.segprep-tmp-" in err[0]
    assert err[0].endswith("files); --overwrite removes them")
    for flag in ([], ["--overwrite"]):
        if flag:
            assert run(voc_tree.root, out, *flags, *flag) == 0
        for split in ("train", "val"):
            assert shard_bytes(out, split) == shard_bytes(tmp_path / "clean", split)
    assert not [n for n in os.listdir(out) if n.startswith(TEMP_PREFIX)]


def test_a_spill_dir_that_fills_up_ends_in_one_line_and_leaves_nothing(voc_tree, tmp_path):
    """A real full disk: --spill_dir on a 64 KiB tmpfs, mounted in a user and mount namespace of the run's own
    (`unshare -Urm`, no root needed). The run stops with one line naming the spill file and the way out; OUT holds
    nothing; nothing of the spill is left on that disk (looked at from inside the namespace, where it exists)."""
    import shlex
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    spill_dir, out = tmp_path / "small-disk", tmp_path / "out"
    spill_dir.mkdir()
    probe = ["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(spill_dir)]
    if not shutil.which("unshare") or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("needs unshare -Urm (util-linux, user namespaces) to mount a small disk without root")
    prepare_cmd = [sys.executable, "-m", "pipelines.prepare", "--input_dir", voc_tree.root, "--output_dir", str(out),
                   "--crop_size", "64", "--crops_per_image", "40", "--spill_dir", str(spill_dir), *BEAM]
    disk = shlex.quote(str(spill_dir))
    script = (f"mount -t tmpfs -o size=64k tmpfs {disk} || exit 90\n"
              f"{shlex.join(prepare_cmd)}\nstatus=$?\nfind {disk} -mindepth 1 >&2\nexit $status\n")
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script], env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 90, "could not mount the small disk: " + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, proc.stderr  # `find` printed nothing: the spill is gone
    assert err[0].startswith(f"prepare: error: cannot write the spill file {spill_dir}/")
    assert "(No space left on device)" in err[0] and err[0].endswith("pass --spill_dir on a larger disk")
    assert not out.exists() or not os.listdir(out)
