"""segprep.verify on real prepare output: whole, then broken the ways shards break."""

import json
import os
import shutil

import pytest

from pipelines import prepare

from segprep import verify
from segprep.formats.shards import TEMP_PREFIX


@pytest.fixture
def out(voc_tree, tmp_path):
    out = str(tmp_path / "out")
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--crop_size", "32",
                        "--crops_per_image", "8", "--num_shards", "3", "--runner=DirectRunner"]) == 0
    return out


def lines(capsys):
    captured = capsys.readouterr()
    return [line for line in captured.out.splitlines() if line.startswith("verify:")], captured.err


@pytest.mark.parametrize("quick", [False, True])
def test_a_whole_output_passes(out, capsys, quick):
    assert verify.main([out] + (["--quick"] if quick else [])) == 0
    found, _ = lines(capsys)
    assert found == [f"verify: {out} is whole: 6 shards, 40 records in 2 splits "
                     f"({'names and counts' if quick else 'every record decoded'})"]


def test_a_truncated_shard_and_a_stray_one_are_named(out, capsys):
    shard = os.path.join(out, "train-00001-of-00003.tfrecord")
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:len(data) - 300])
    stray = os.path.join(out, "train-00000-of-00002.tfrecord")  # an earlier run's, with another shard count
    shutil.copy(os.path.join(out, "train-00000-of-00003.tfrecord"), stray)
    for flags in ([], ["--quick"]):
        assert verify.main([out, *flags]) == 1
        found, err = lines(capsys)
        assert f"verify: {stray}: a shard metadata.json does not list" in "\n".join(found)
        cut = [line for line in found if line.startswith(f"verify: {shard}: record ")]
        assert len(cut) == 1 and "cut short" in cut[0], found
        assert len(found) == 2 and "2 problems" in err


def test_corrupt_bytes_missing_shards_and_wrong_counts(out, capsys):
    shard = os.path.join(out, "val-00002-of-00003.tfrecord")
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    os.remove(os.path.join(out, "train-00002-of-00003.tfrecord"))
    meta = json.load(open(os.path.join(out, "metadata.json")))
    meta["splits"]["train"]["shard_records"][0] += 1
    open(os.path.join(out, "metadata.json"), "w").write(json.dumps(meta))
    assert verify.main([out]) == 1
    found = "\n".join(lines(capsys)[0])
    assert "data checksum mismatch" in found and f"{shard}: record" in found
    assert "train-00002-of-00003.tfrecord: listed in metadata.json but missing" in found
    assert "train-00000-of-00003.tfrecord: holds" in found and "metadata.json says" in found
    assert "split train has 24 records but its shards list 25" in found


def test_mask_values_outside_the_classes_and_an_unfinished_run(out, capsys):
    meta = json.load(open(os.path.join(out, "metadata.json")))
    meta["num_classes"] = 2  # the records hold aeroplane (1), boat (4) and person (15)
    meta["class_names"], meta["class_colors"] = meta["class_names"][:2], meta["class_colors"][:2]
    open(os.path.join(out, "metadata.json"), "w").write(json.dumps(meta))
    assert verify.main([out]) == 1
    found = lines(capsys)[0]
    assert any("mask holds values 4, 15 outside the 2 classes and 255" in line for line in found), found
    os.remove(os.path.join(out, "metadata.json"))
    os.makedirs(os.path.join(out, TEMP_PREFIX + "abc"))
    assert verify.main([out]) == 1
    assert lines(capsys)[0] == [f"verify: {out}/metadata.json: missing (it holds shards: the prepare run did not "
                                "finish)"]


@pytest.mark.parametrize("quick", [False, True])
def test_a_corrupt_length_field_is_a_problem_line_not_a_traceback(out, capsys, quick):
    import struct

    from segprep.formats import tfrecord

    shard = os.path.join(out, "train-00000-of-00003.tfrecord")
    data = bytearray(open(shard, "rb").read())
    data[:8] = struct.pack("<Q", 1 << 62)  # a length of 4 EiB, with its old checksum
    open(shard, "wb").write(bytes(data))
    assert verify.main([out] + (["--quick"] if quick else [])) == 1
    found = [line for line in lines(capsys)[0] if shard in line]
    assert found == [f"verify: {shard}: record 0: length checksum mismatch (not a TFRecord file, or corrupt)"]
    # a length whose checksum is right but runs past the end of the file: cut short, never a 4 EiB read
    head = struct.pack("<Q", 1 << 62)
    data[:12] = head + struct.pack("<I", tfrecord.masked_crc(head))
    open(shard, "wb").write(bytes(data))
    assert verify.main([out] + (["--quick"] if quick else [])) == 1
    found = [line for line in lines(capsys)[0] if shard in line]
    assert len(found) == 1 and "record 0: cut short" in found[0]


def test_quick_reads_the_framing_and_seeks_over_the_bodies(out, monkeypatch):
    from segprep.formats import tfrecord

    shard = os.path.join(out, "train-00000-of-00003.tfrecord")
    read = []
    real_open = tfrecord.storage.open_read

    class Counting:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(tfrecord.storage, "open_read", lambda path, gzip=False: Counting(real_open(path, gzip)))
    framing = list(tfrecord.read(shard, skip_data=True))
    assert sum(read) == 12 * len(framing)  # headers only: each body was seeked over
    read.clear()
    full = list(tfrecord.read(shard))
    assert sum(read) == os.path.getsize(shard) and len(full) == len(framing)


def test_a_class_list_that_disagrees_with_its_mask_is_named(out, capsys):
    from segprep.formats import tfrecord, records

    meta = json.load(open(os.path.join(out, "metadata.json")))
    path = os.path.join(out, next(n for n in meta["splits"]["train"]["shards"]
                                  if meta["splits"]["train"]["shard_records"][meta["splits"]["train"]["shards"]
                                                                              .index(n)]))
    kept = [data for _, data in tfrecord.read(path)]
    features = {k: v for k, (_, v) in records.decode_example(kept[0]).items()}
    listed = features[records.CLASS_PRESENT]
    features[records.CLASS_PRESENT] = [3]  # a valid record, checksums and all, whose list is wrong
    with open(path, "wb") as f:
        for data in [records.encode_example(features)] + kept[1:]:
            tfrecord.write(f, data)
    assert verify.main([out]) == 1
    assert lines(capsys)[0] == [f"verify: {path}: record 0: {records.CLASS_PRESENT} lists [3] but the mask holds "
                                f"classes {listed}"]
