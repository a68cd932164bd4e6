import numpy as np
import pytest

from segprep import lookup
from segprep.palette import VOC, PaletteError, load_palette

BG, AERO, BOAT, PERSON, BORDER = (0, 0, 0), (128, 0, 0), (0, 0, 128), (192, 128, 128), (224, 224, 192)


def mask(rows):
    return np.array(rows, np.uint8)


def test_voc_palette_matches_the_devkit():
    assert VOC.num_classes == 21
    assert VOC.names[1] == "aeroplane" and VOC.colors[1] == AERO
    assert VOC.names[4] == "boat" and VOC.colors[4] == BOAT
    assert VOC.names[15] == "person" and VOC.colors[15] == PERSON
    assert VOC.colors[20] == (0, 64, 128)
    assert VOC.ignore_colors == (BORDER,)


def test_hand_written_4x4_mask():
    m = mask([[BG, AERO, AERO, BOAT],
              [BG, BORDER, BOAT, BOAT],
              [PERSON, PERSON, BG, BG],
              [BG, BG, BG, AERO]])
    got = lookup.convert_mask(m, VOC).classes
    np.testing.assert_array_equal(got, [[0, 1, 1, 4], [0, 255, 4, 4], [15, 15, 0, 0], [0, 0, 0, 1]])


def test_red_and_blue_are_never_swapped():
    # (128,0,0) aeroplane and (0,0,128) boat are each other's BGR reading.
    got = lookup.convert_mask(mask([[AERO, BOAT]]), VOC).classes
    assert got.tolist() == [[1, 4]]


def test_unknown_colours_are_an_error_by_default_never_class_0():
    m = mask([[BG, (10, 20, 30)], [(10, 20, 30), (200, 1, 1)]])
    with pytest.raises(lookup.UnknownColorsError) as e:
        lookup.convert_mask(m, VOC)
    assert e.value.pixels == 3
    assert e.value.colors[0] == ((10, 20, 30), 2)
    assert "3 mask pixels" in str(e.value) and "(10, 20, 30)" in str(e.value)


def test_unknown_colours_ignored():
    conv = lookup.convert_mask(mask([[BG, (10, 20, 30)], [AERO, (10, 20, 30)]]), VOC, "ignore")
    assert conv.classes.tolist() == [[0, 255], [1, 255]]
    assert conv.unknown_pixels == 2


def test_nearest_snaps_lossy_colours_within_tolerance_only():
    lossy = mask([[(125, 3, 2), (2, 1, 131)], [(186, 133, 125), (3, 3, 3)]])
    assert lookup.convert_mask(lossy, VOC, "nearest", 10).classes.tolist() == [[1, 4], [15, 0]]
    with pytest.raises(lookup.UnknownColorsError):
        lookup.convert_mask(mask([[(100, 100, 30)]]), VOC, "nearest", 10)
    # Exact palette colours win over neighbours even when another colour is also near.
    assert lookup.convert_mask(mask([[(64, 0, 0), (128, 0, 0)]]), VOC, "nearest", 80).classes.tolist() == [[8, 1]]


def test_nearest_table_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    colors = np.array(VOC.colors + VOC.ignore_colors)
    values = np.array(list(range(21)) + [255])
    px = np.clip(colors[rng.integers(0, len(colors), 3000)] + rng.integers(-25, 26, (3000, 3)), 0, 255)
    table = lookup.build_table(VOC, "nearest", 30.0)
    keys = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
    d2 = ((px[:, None, :] - colors[None]) ** 2).sum(-1)
    best = d2.argmin(1)
    want = np.where(d2.min(1) <= 900, values[best], lookup.UNKNOWN)
    np.testing.assert_array_equal(table[keys], want)


def test_index_masks_pass_known_classes_and_flag_the_rest():
    m = np.array([[0, 1, 20], [255, 21, 200]], np.uint8)
    with pytest.raises(lookup.UnknownColorsError) as e:
        lookup.convert_mask(m, VOC)
    assert e.value.pixels == 2 and "values off the palette" in str(e.value)
    assert lookup.convert_mask(m, VOC, "ignore").classes.tolist() == [[0, 1, 20], [255, 255, 255]]


def test_banded_conversion_of_a_tall_mask_equals_one_pass():
    rng = np.random.default_rng(1)
    colors = np.array(VOC.colors, np.uint8)
    idx = rng.integers(0, 21, (3000, 700))
    got = lookup.convert_mask(colors[idx], VOC).classes  # 2.1 Mpx: converted in several bands
    np.testing.assert_array_equal(got, idx)


def test_user_palette_json(tmp_path):
    p = tmp_path / "pal.json"
    p.write_text('{"names": ["bg", "building"], "colors": [[0,0,0],[255,0,0]], "ignore_colors": [[255,255,255]]}')
    pal = load_palette(str(p))
    got = lookup.convert_mask(mask([[(255, 0, 0), (255, 255, 255), (0, 0, 0)]]), pal).classes
    assert got.tolist() == [[1, 255, 0]]
    assert pal.colorize(got).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 0]]]


@pytest.mark.parametrize("text, message", [
    ('{"names": ["a", "b"], "colors": [[0,0,0]]}', "one colour per class"),
    ('{"names": ["a", "b"], "colors": [[0,0,0],[0,0,0]]}', "used by both"),
    ('{"names": ["a"], "colors": [[0,0,300]]}', "0..255"),
    ('{"colors": []}', '"names"'),
    ("not json", "not valid JSON"),
])
def test_bad_palette_files_say_what_is_wrong(tmp_path, text, message):
    p = tmp_path / "pal.json"
    p.write_text(text)
    with pytest.raises(PaletteError, match=message):
        load_palette(str(p))


def test_colorize_is_the_inverse_of_the_lookup():
    idx = np.arange(21, dtype=np.uint8).reshape(3, 7)
    np.testing.assert_array_equal(lookup.convert_mask(VOC.colorize(idx), VOC).classes, idx)
