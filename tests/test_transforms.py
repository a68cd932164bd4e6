"""Each Beam stage on its own, with TestPipeline and assert_that (as Beam's own examples test theirs), and the
finishing step's retries. The end-to-end runs are in test_prepare.py."""

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import mask_colors
from pipelines import output
from pipelines.cutting import CutCrops
from pipelines.reading import DecodedPair, DecodePairs, PairBytes, ReadPairs
from pipelines.shards import SpreadCrops, WriteShards
from pipelines.transforms import ERRORS, STATS, Finalize, MergeStats
from segprep.formats.shards import ShardResult, auto_shard_count
from segprep import codec, layout
from segprep.formats.shards import TEMP_PREFIX, ShardFormat, is_shard, shard_name
from segprep.convert import ConvertConfig
from segprep.formats.metadata import Stats
from segprep.pairs import Pair
from segprep.palette import VOC


def raw_records(path):
    """The records of one TFRecord file, read by TensorFlow."""
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def pipeline():
    return BeamTestPipeline(options=PipelineOptions(["--runner=FnApiRunner"]))


def voc_pair(split, image_id):
    return Pair(split, image_id, f"JPEGImages/{image_id}.jpg", f"SegmentationClass/{image_id}.png")


def test_read_pairs_reads_bytes_and_reports_missing_files(voc_tree):
    os.remove(layout.mask_path(voc_tree.root, "t2"))
    want = [PairBytes("train", i, open(layout.image_path(voc_tree.root, i), "rb").read(),
                      open(layout.mask_path(voc_tree.root, i), "rb").read(),
                      (layout.image_path(voc_tree.root, i), layout.mask_path(voc_tree.root, i))) for i in ("t1", "t3")]
    listed = [voc_pair("train", i) for i in ("t1", "t2", "t3", "nope")]
    listed.append(Pair("train", "lonely", None, "SegmentationClass/lonely.png", "missing_image", "no image for it"))
    with pipeline() as p:
        result = p | beam.Create(listed) | ReadPairs(voc_tree.root)
        assert_that(result.pairs, equal_to(want), label="pairs")
        assert_that(result[ERRORS] | beam.Map(lambda e: (e.image_id, e.reason, e.files)),
                    equal_to([("t2", "missing_mask", (layout.image_path(voc_tree.root, "t2"),
                                                      layout.mask_path(voc_tree.root, "t2"))),
                              ("nope", "missing_image", (layout.image_path(voc_tree.root, "nope"),
                                                         layout.mask_path(voc_tree.root, "nope"))),
                              ("lonely", "missing_image", (f"{voc_tree.root}/SegmentationClass/lonely.png",))]),
                    label="errors")


def test_decode_pairs_converts_masks_and_reports_bad_ones():
    classes = np.array([[0, 1, 1], [4, 255, 15]], np.uint8)
    image = codec.encode_image(np.full((2, 3, 3), 90, np.uint8), "png")
    good = codec.encode_image(mask_colors()[classes], "png")
    off = codec.encode_image(np.full((2, 3, 3), 33, np.uint8), "png")
    files = {i: (f"root/JPEGImages/{i}.jpg", f"root/SegmentationClass/{i}.png") for i in ("good", "off", "cut")}
    pairs = [PairBytes("val", "good", image, good, files["good"]), PairBytes("val", "off", image, off, files["off"]),
             PairBytes("val", "cut", image[:40], good, files["cut"])]
    with pipeline() as p:
        result = p | beam.Create(pairs) | DecodePairs(ConvertConfig())
        assert_that(result.decoded | beam.Map(lambda d: ((d.split, d.image_id), d.classes.tobytes(), d.stats.images)),
                    equal_to([(("val", "good"), classes.tobytes(), 1)]), label="decoded")
        assert_that(result[ERRORS] | beam.Map(lambda e: (e.image_id, e.reason, e.files)),
                    equal_to([("off", "unknown_colors", ("root/JPEGImages/off.jpg", "root/SegmentationClass/off.png")),
                              ("cut", "bad_image", ("root/JPEGImages/cut.jpg", "root/SegmentationClass/cut.png"))]),
                    label="errors")


def test_cut_crops_gives_random_crops_to_training_splits_and_tiles_to_others():
    image = np.zeros((100, 130, 3), np.uint8)
    classes = np.zeros((100, 130), np.uint8)
    source = Stats(images=1, source_pixels=classes.size)
    config = ConvertConfig(crop_size=64, crops_per_image=5)
    decoded = [DecodedPair("train", "a", image, classes, source), DecodedPair("val", "b", image, classes, source)]
    with pipeline() as p:
        result = p | beam.Create(decoded) | CutCrops(config, frozenset({"train"}))
        assert_that(result.crops | beam.MapTuple(lambda split, c: (split, c[0], c[1])),
                    equal_to([("train", "a", k) for k in range(5)] + [("val", "b", k) for k in range(6)]),
                    label="crops")
        assert_that(result[STATS] | beam.MapTuple(lambda split, s: (split, s.images, s.crops, s.source_pixels)),
                    equal_to([("train", 1, 5, 13000), ("val", 1, 6, 13000)]), label="stats")


def _crops(count, size=100):
    return [("train", (f"img{i % 3}", i, bytes([i]) * size)) for i in range(count)]


def test_stages_count_their_work_in_beam_metrics(voc_tree):
    from apache_beam.metrics.metric import MetricsFilter

    os.remove(layout.mask_path(voc_tree.root, "t2"))
    p = pipeline()
    ids = p | beam.Create([voc_pair("train", i) for i in ("t1", "t2", "t3")])
    pairs = ids | ReadPairs(voc_tree.root)
    decoded = pairs.pairs | DecodePairs(ConvertConfig(crop_size=64, crops_per_image=3))
    cut = decoded.decoded | CutCrops(ConvertConfig(crop_size=64, crops_per_image=3), frozenset({"train"}))
    _ = (cut.crops | SpreadCrops(seed=0, num_shards=1) | WriteShards(str(voc_tree.root)))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in
                result.metrics().query(MetricsFilter().with_namespace("segprep"))["counters"]}
    assert counters["images_read"] == 2 and counters["images_failed"] == 1 and counters["images_done"] == 2
    assert counters["crops_cut"] == counters["crops_written"] == 6 and counters["bytes_written"] > 0


def test_spread_crops_fixed_count_groups_every_crop_once_with_distinct_orders():
    def summary(groups):
        keys = sorted(key for key, _ in groups)
        crops = sorted(data[0] for _, records in groups for _, _, data in records)
        orders = [order for _, records in groups for order, _, _ in records]
        return keys, crops, len(set(orders)) == len(orders)

    with pipeline() as p:
        grouped = p | beam.Create(_crops(30)) | SpreadCrops(seed=0, num_shards=3)
        assert_that(grouped | beam.MapTuple(lambda key, records: (key, list(records))) | beam.combiners.ToList()
                    | beam.Map(summary),
                    equal_to([([("train", 0, 3), ("train", 1, 3), ("train", 2, 3)], list(range(30)), True)]))


def test_spread_crops_automatic_count_follows_the_bytes():
    assert auto_shard_count(0, 250) == 1 and auto_shard_count(1000, 250) == 4 and auto_shard_count(1001, 250) == 5
    with pipeline() as p:
        grouped = p | beam.Create(_crops(10)) | SpreadCrops(seed=0, num_shards=0, target_shard_bytes=250)
        assert_that(grouped | beam.MapTuple(lambda key, records: key[2]) | beam.Distinct(), equal_to([4]))


def test_write_shards_writes_records_in_order_key_order(tmp_path):
    temp = str(tmp_path / "tmp")
    os.makedirs(temp)
    groups = [(("train", 1, 2), [(30, 7, b"c"), (10, 7, b"a"), (20, 7, b"b"), (15, 9, b"failed")]),
              (("val", 0, 1), [(5, 7, b"z")])]
    with pipeline() as p:
        failed = p | "Failed" >> beam.Create([9])  # an image key of a tile that failed in some window
        results = p | beam.Create(groups) | WriteShards(temp, failed=failed)
        assert_that(results, equal_to([
            ShardResult("train", 1, 2, "train-00001-of-00002.tfrecord", f"{temp}/train-00001-of-00002.tfrecord", 3, 3),
            ShardResult("val", 0, 1, "val-00000-of-00001.tfrecord", f"{temp}/val-00000-of-00001.tfrecord", 1, 1)]))
    assert raw_records(f"{temp}/train-00001-of-00002.tfrecord") == [b"a", b"b", b"c"]


def test_merge_stats_adds_exactly():
    parts = [("train", Stats(images=1, crops=2, rgb_pixels=5, rgb_sum=np.array([1, 2, 3]))),
             ("train", Stats(images=1, crops=3, rgb_pixels=7, rgb_sum=np.array([10, 20, 30]))),
             ("val", Stats(images=1, crops=1))]
    with pipeline() as p:
        merged = p | beam.Create(parts) | beam.CombinePerKey(MergeStats())
        assert_that(merged | beam.MapTuple(lambda s, st: (s, st.images, st.crops, st.rgb_pixels, st.rgb_sum.tolist())),
                    equal_to([("train", 2, 5, 12, [11, 22, 33]), ("val", 1, 1, 0, [0, 0, 0])]))


# --- finishing: Finalize as a stage, and output.finalize run again as a runner's retry would ---------------------

def _run_spec(out, num_shards=3):
    return output.RunSpec(output_dir=str(out), temp_dir=f"{out}/{TEMP_PREFIX}test", splits=("train", "val"),
                          random_splits=("train",), listed={"train": 2, "val": 1},
                          config=ConvertConfig(crop_size=64, palette=VOC), shard_format=ShardFormat(), num_shards=num_shards,
                          flags={}, started=0.0)


def _write_temp_shards(run, layout_by_split):
    """Real shard files in the run's temp dir; → their ShardResults."""
    os.makedirs(run.temp_dir, exist_ok=True)
    results = []
    for split, shards in layout_by_split.items():
        for shard, records in shards.items():
            name = shard_name(split, shard, run.num_shards)
            with open(f"{run.temp_dir}/{name}", "wb") as f:
                for r in records:
                    _TFRecordUtil.write_record(f, r)
            results.append(ShardResult(split, shard, run.num_shards, name, f"{run.temp_dir}/{name}", len(records),
                                       sum(map(len, records))))
    return results


def test_finalize_stage_moves_shards_adds_empty_ones_and_writes_metadata_last(tmp_path):
    run = _run_spec(tmp_path / "out")
    shards = _write_temp_shards(run, {"train": {0: [b"x", b"y"], 2: [b"z"]}})
    with pipeline() as p:
        meta = {"shards": p | "S" >> beam.Create(shards),
                "stats": p | "T" >> beam.Create([("train", Stats(images=2, crops=3))]),
                "errors": p | "E" >> beam.Create([])} | Finalize(lambda sh, st, er: output.finalize(run, sh, st, er))
        assert_that(meta | beam.Map(lambda m: (m["splits"]["train"]["shard_records"],
                                               m["splits"]["val"]["shard_records"])),
                    equal_to([([2, 0, 1], [0, 0, 0])]))
    names = sorted(os.listdir(run.output_dir))
    assert names == ["dataset_info.json", "features.json", "metadata.json"] + [
        shard_name(s, i, 3) for s in ("train", "val") for i in range(3)]
    assert raw_records(f"{run.output_dir}/train-00001-of-00003.tfrecord") == []  # empty, and a valid shard
    assert raw_records(f"{run.output_dir}/train-00002-of-00003.tfrecord") == [b"z"]


def test_finalize_run_again_after_a_partial_attempt_completes_it(tmp_path):
    run = _run_spec(tmp_path / "out")
    shards = _write_temp_shards(run, {"train": {0: [b"a"], 1: [b"b", b"c"]}, "val": {0: [b"d"]}})
    # A first attempt moved one shard and died.
    os.rename(f"{run.temp_dir}/train-00000-of-00003.tfrecord", f"{run.output_dir}/train-00000-of-00003.tfrecord")
    first = output.finalize(run, shards, [], [])
    again = output.finalize(run, shards, [], [])  # and a retry after a finished attempt changes nothing
    for meta in (first, again):
        assert meta["splits"]["train"]["shard_records"] == [1, 2, 0]
        assert meta["splits"]["val"]["shard_records"] == [1, 0, 0]
    assert raw_records(f"{run.output_dir}/train-00001-of-00003.tfrecord") == [b"b", b"c"]
    assert not os.path.exists(run.temp_dir)
    assert sorted(n for n in os.listdir(run.output_dir) if is_shard(n)) == \
        [shard_name(s, i, 3) for s in ("train", "val") for i in range(3)]


def test_finalize_refuses_to_invent_a_shard_that_was_written_and_lost(tmp_path):
    run = _run_spec(tmp_path / "out")
    shards = _write_temp_shards(run, {"train": {0: [b"a"]}})
    os.remove(f"{run.temp_dir}/train-00000-of-00003.tfrecord")
    with pytest.raises(RuntimeError, match="train-00000-of-00003.tfrecord is neither in"):
        output.finalize(run, shards, [], [])
    assert not os.path.exists(f"{run.output_dir}/metadata.json")
