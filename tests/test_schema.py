import numpy as np
import pytest
import tensorflow as tf

from segprep import codec
from segprep.formats import records
from trainer import data


def test_hand_serialised_example_is_a_real_tf_example():
    mask = np.array([[0, 1], [255, 4]], np.uint8)
    rec = records.CropRecord(source_id="2007_000032", image=codec.encode_image(np.zeros((2, 2, 3), np.uint8)),
                            image_format="jpeg", mask_png=codec.encode_index_png(mask), height=2, width=2,
                            offset=(300, 7), source_height=500, source_width=375)
    ex = tf.train.Example.FromString(rec.serialize())
    f = ex.features.feature
    assert set(f) == set(records.FEATURES) - {records.GEO_CRS, records.GEO_TRANSFORM}  # a source without a grid
    assert f[records.IMAGE_SOURCE_ID].bytes_list.value == [b"2007_000032"]
    assert f[records.IMAGE_FILENAME].bytes_list.value == [b"2007_000032"]
    assert f[records.IMAGE_FORMAT].bytes_list.value == [b"jpeg"]
    assert f[records.MASK_FORMAT].bytes_list.value == [b"png"]
    assert list(f[records.CROP_OFFSET].int64_list.value) == [300, 7]
    assert f[records.SOURCE_HEIGHT].int64_list.value == [500] and f[records.SOURCE_WIDTH].int64_list.value == [375]
    assert f[records.IMAGE_CHANNELS].int64_list.value == [3]
    png = f[records.MASK_ENCODED].bytes_list.value[0]
    np.testing.assert_array_equal(tf.io.decode_png(png, channels=1).numpy()[..., 0], mask)


@pytest.mark.parametrize("present", [(0, 4, 20), (7,), ()])
def test_feature_table_parses_what_the_writer_writes(present):
    rec = records.CropRecord("a", b"img", "png", b"msk", 256, 256, (0, 0), 10, 20, present=present)
    parsed = tf.io.parse_single_example(rec.serialize(), data.feature_spec())
    assert parsed[records.IMAGE_ENCODED].numpy() == b"img"
    assert parsed[records.IMAGE_HEIGHT].numpy() == 256
    assert parsed[records.CLASS_PRESENT].numpy().tolist() == list(present)
    ex = tf.train.Example.FromString(rec.serialize())  # protobuf's own parser: the list, or an empty Int64List
    assert ex.features.feature[records.CLASS_PRESENT].WhichOneof("kind") == "int64_list"
    assert list(ex.features.feature[records.CLASS_PRESENT].int64_list.value) == list(present)


def test_records_of_earlier_runs_without_class_presence_still_parse_and_check():
    features = records.CropRecord("a", b"img", "png", b"msk", 8, 8, (0, 0), 10, 20).features()
    del features[records.CLASS_PRESENT]
    old = records.encode_example(features)
    parsed = tf.io.parse_single_example(old, data.feature_spec())
    assert parsed[records.CLASS_PRESENT].numpy().tolist() == []
    assert records.check_example(old)[1] == []
    del features[records.SOURCE_WIDTH]
    assert records.check_example(records.encode_example(features))[1] == [f"no {records.SOURCE_WIDTH}"]


def test_large_and_negative_integers_round_trip():
    data = records.encode_example({records.CROP_OFFSET: [2**40, -5]})
    assert list(tf.train.Example.FromString(data).features.feature[records.CROP_OFFSET].int64_list.value) == [
        2**40, -5]


def test_equal_records_are_equal_bytes():
    a = records.CropRecord("a", b"1", "jpeg", b"2", 1, 1, (0, 0), 1, 1)
    assert a.serialize() == records.CropRecord("a", b"1", "jpeg", b"2", 1, 1, (0, 0), 1, 1).serialize()


BAD_INTS = [2**63, -2**63 - 1, 2**70, -2**64 - 5, 1.5, 2.0, "5", np.float32(1)]


@pytest.mark.parametrize("value", BAD_INTS, ids=repr)
def test_int64_values_tf_rejects_are_rejected_the_same_way(value):
    with pytest.raises((TypeError, ValueError)) as tf_error:
        tf.train.Int64List(value=[value])
    with pytest.raises(tf_error.type):
        records.encode_example({records.IMAGE_HEIGHT: [value]})


@pytest.mark.parametrize("value", [2**63 - 1, -2**63, 0, -1, True, np.int64(7), np.uint8(200)], ids=repr)
def test_int64_values_tf_accepts_round_trip(value):
    data = records.encode_example({records.IMAGE_HEIGHT: [value]})
    assert tf.train.Example.FromString(data).features.feature[records.IMAGE_HEIGHT].int64_list.value == [int(value)]


@pytest.mark.parametrize("value", ["text", 5, bytearray(b"x")], ids=repr)
def test_bytes_features_take_bytes_only(value):
    with pytest.raises(TypeError, match="expected bytes"):
        records.encode_example({records.IMAGE_ENCODED: [value]})


def test_unknown_keys_and_wrong_value_counts_are_refused():
    with pytest.raises(KeyError, match="not a record key"):
        records.encode_example({"image/label": [1]})
    with pytest.raises(ValueError, match="holds 2 values. Received: 1"):
        records.encode_example({records.CROP_OFFSET: [3]})


def test_a_georeferenced_crops_keys_parse_as_tensorflow_reads_them_and_float64_survives():
    from segprep import geo

    transform = (523506.289, 0.3, 0.0, 5812284.178, 0.0, -0.3)
    rec = records.CropRecord("a", b"img", "png", b"msk", 8, 8, (0, 0), 10, 20,
                             geo=("EPSG:32633", geo.pack(transform)))
    parsed = tf.io.parse_single_example(rec.serialize(), data.feature_spec())
    assert parsed[records.GEO_CRS].numpy() == b"EPSG:32633"
    assert geo.unpack(parsed[records.GEO_TRANSFORM].numpy()) == transform  # every bit of float64
    assert tf.io.decode_raw(parsed[records.GEO_TRANSFORM], tf.float64).numpy().tolist() == list(transform)
    assert records.check_example(rec.serialize())[1] == []
    plain = tf.io.parse_single_example(records.CropRecord("a", b"i", "png", b"m", 8, 8, (0, 0), 10, 20).serialize(),
                                       data.feature_spec())
    assert plain[records.GEO_CRS].numpy() == b"" and plain[records.GEO_TRANSFORM].numpy() == b""
