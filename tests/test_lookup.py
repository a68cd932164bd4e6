import numpy as np
import pytest

from conftest import jpeg_damaged, mask_colors, voc_like_mask
from segprep import lookup
from segprep.palette import VOC, Palette, PaletteError, load_palette

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


def test_entry_table_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    colors = np.array(VOC.colors + VOC.ignore_colors)
    px = np.clip(colors[rng.integers(0, len(colors), 3000)] + rng.integers(-25, 26, (3000, 3)), 0, 255)
    table = lookup.build_entry_table(VOC, 30.0)
    keys = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
    d2 = ((px[:, None, :] - colors[None]) ** 2).sum(-1)
    want = np.where(d2.min(1) <= 900, d2.argmin(1), lookup.FAR)
    np.testing.assert_array_equal(table[keys], want)


CAT = (64, 0, 0)  # halfway between background (0, 0, 0) and aeroplane (128, 0, 0)


@pytest.mark.parametrize("quality", [75, 95])
def test_nearest_restores_jpeg_damaged_masks_without_inventing_classes(quality):
    agree = total = 0
    for i in range(24):
        truth = voc_like_mask(i)
        damaged = jpeg_damaged(mask_colors()[truth], quality)
        got = lookup.convert_mask(damaged, VOC, "nearest").classes  # every mask is restored, none rejected
        agree += int((got == truth).sum())
        total += truth.size
        assert set(np.unique(got).tolist()) <= set(np.unique(truth).tolist())  # never a class that is not there
    assert agree / total >= 0.999, f"{agree / total:.5f} of pixels restored"


def test_ringing_between_background_and_aeroplane_does_not_become_cat():
    truth = np.zeros((64, 96), np.uint8)
    truth[:, 43:] = 1  # background | aeroplane, one long edge inside a JPEG block
    damaged = jpeg_damaged(mask_colors()[truth], 75)
    nearest_any = lookup.build_entry_table(VOC)[lookup.color_keys(damaged)]
    assert (nearest_any == 8).sum() >= 64  # a whole line of pixels nearest to cat: the old rule made it "cat"
    got = lookup.convert_mask(damaged, VOC, "nearest").classes
    assert (got == truth).mean() >= 0.999 and 8 not in got


def test_nearest_keeps_a_real_cat_next_to_its_ringing():
    truth = np.zeros((64, 96), np.uint8)
    truth[:, 43:] = 1
    truth[20:40, 5:25] = 8  # a real cat, 20×20
    got = lookup.convert_mask(jpeg_damaged(mask_colors()[truth], 75), VOC, "nearest").classes
    assert (got == 8).sum() >= 0.9 * 400 and (got == truth).mean() >= 0.995


def test_nearest_on_a_clean_mask_is_exact_even_for_single_pixels():
    truth = voc_like_mask(3)
    truth[5, 5] = 8  # one lone cat pixel: no 3×3 block, but the mask is clean, so it stays
    conv = lookup.convert_mask(mask_colors()[truth], VOC, "nearest")
    np.testing.assert_array_equal(conv.classes, truth)
    assert conv.unknown_pixels == 0


def test_nearest_rejects_colours_the_palette_lacks_and_names_them():
    truth = voc_like_mask(5)
    truth[100:160, 100:200] = 8
    no_cat = Palette(tuple(n for i, n in enumerate(VOC.names) if i != 8),
                     tuple(c for i, c in enumerate(VOC.colors) if i != 8), VOC.ignore_colors)
    with pytest.raises(lookup.UnknownColorsError, match=r"form areas \(9×9 px or more\) of .*\(64, 0, 0\)"):
        lookup.convert_mask(jpeg_damaged(mask_colors()[truth], 90), no_cat, "nearest")
    potsdam = Palette(("impervious", "building"), ((255, 255, 255), (0, 0, 255)))  # the wrong palette altogether
    with pytest.raises(lookup.UnknownColorsError, match="not compression noise"):
        lookup.convert_mask(jpeg_damaged(mask_colors()[truth], 90), potsdam, "nearest")


def test_error_mode_suggests_nearest_only_for_compression_noise():
    damaged = jpeg_damaged(mask_colors()[voc_like_mask(1)], 90)
    with pytest.raises(lookup.UnknownColorsError, match="try --unknown_colors=nearest") as e:
        lookup.convert_mask(damaged, VOC)
    assert "compression noise" in str(e.value)
    wrong = np.full((20, 20, 3), (10, 200, 30), np.uint8)
    with pytest.raises(lookup.UnknownColorsError) as e:
        lookup.convert_mask(wrong, VOC)
    assert "try --unknown_colors=nearest" not in str(e.value) and "--palette" in str(e.value)


def test_bands_give_what_one_pass_gives(monkeypatch):
    masks = [jpeg_damaged(mask_colors()[voc_like_mask(i)], 80) for i in range(4)]
    whole = [lookup.convert_mask(m, VOC, "nearest").classes for m in masks]
    monkeypatch.setattr(lookup, "_BAND_PIXELS", 500 * 7)  # 7-row bands: the 3×3 and 9×9 tests straddle them
    for m, want in zip(masks, whole):
        np.testing.assert_array_equal(lookup.convert_mask(m, VOC, "nearest").classes, want)


def test_off_palette_summary_is_exact_across_bands_and_merges(monkeypatch):
    rng = np.random.default_rng(4)
    noise = rng.integers(0, 6, (300, 200, 3)).astype(np.uint8) * 40 + 7  # 216 colours, none on the palette
    keys = (noise[..., 0].astype(int) << 16) | (noise[..., 1].astype(int) << 8) | noise[..., 2]
    found, counts = np.unique(keys, return_counts=True)
    monkeypatch.setattr(lookup, "_BAND_PIXELS", 200 * 11)
    monkeypatch.setattr(lookup.ColorCounter, "_MERGE_AT", 300)
    with pytest.raises(lookup.UnknownColorsError) as e:
        lookup.convert_mask(noise, VOC)
    assert e.value.pixels == noise.shape[0] * noise.shape[1] and e.value.distinct == found.size
    top = np.lexsort((found, -counts))[:5]
    assert e.value.colors == [(lookup.key_color(int(found[i])), int(counts[i])) for i in top]


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
    ('{"names": "ab", "colors": [[0,0,0],[9,9,9]]}', '"names" must be a list of strings'),
    ('{"names": ["a", "a"], "colors": [[0,0,0],[9,9,9]]}', "'a' is there more than once"),
    ('{"names": ["a"], "colors": [[true,0,0]]}', r"three integers in 0\.\.255. Received: \(True, 0, 0\)"),
    ('{"names": ["a"], "colors": [[0,0,0]], "ignore_colors": [[0.5,0,0]]}', "three integers"),
    ('{"names": ["a"], "colors": [[0,0,0]], "colours": [[1,1,1]]}', "Unknown key 'colours' \\(did you mean 'colors'"),
    ('{"names": ["a"], "colors": [[0,0,0]], "indexmap": {"1": 0}}', "did you mean 'index_map'"),
    ('{"names": ["a"], "colors": [[0,0,0]], "index_map": {"1": true}}', "maps 1 to True"),
])
def test_bad_palette_files_say_what_is_wrong(tmp_path, text, message):
    p = tmp_path / "pal.json"
    p.write_text(text)
    with pytest.raises(PaletteError, match=message):
        load_palette(str(p))


def test_colorize_is_the_inverse_of_the_lookup():
    idx = np.arange(21, dtype=np.uint8).reshape(3, 7)
    np.testing.assert_array_equal(lookup.convert_mask(VOC.colorize(idx), VOC).classes, idx)


def test_nearest_refuses_a_palette_too_big_to_index_and_error_mode_still_works():
    from segprep.convert import ConvertConfig

    colors = tuple((i, 0, 0) for i in range(254))
    big = Palette(tuple(f"c{i}" for i in range(254)), colors, ((0, 1, 0), (0, 2, 0)))  # 256 colours in all
    with pytest.raises(ValueError, match="up to 254 colours"):
        ConvertConfig(palette=big, unknown_colors="nearest")
    with pytest.raises(lookup.UnknownColorsError, match="off the palette"):
        lookup.convert_mask(np.full((4, 4, 3), (0, 9, 9), np.uint8), big)


def test_index_map_maps_label_ids_and_names_values_it_lacks():
    from segprep.palette import Palette, shipped

    city = shipped("cityscapes")
    ids = np.array([[7, 8, 26], [0, 33, 18]], np.uint8)  # road, sidewalk, car / unlabeled, bicycle, polegroup
    np.testing.assert_array_equal(lookup.convert_mask(ids, city).classes, [[0, 1, 13], [255, 18, 255]])
    with pytest.raises(lookup.UnknownColorsError, match=r"2 mask pixels .*\(40,\)×2.*index_map has no entry"):
        lookup.convert_mask(np.array([[40, 40, 7]], np.uint8), city)
    assert lookup.convert_mask(np.array([[40, 7]], np.uint8), city, "ignore").classes.tolist() == [[255, 0]]
    wide = Palette(("a", "b"), ((0, 0, 0), (9, 9, 9)), index_map=((1000, 0), (40000, 1), (0, 255)))
    mask = np.array([[1000, 40000, 0]], np.uint16)
    assert lookup.convert_mask(mask, wide).classes.tolist() == [[0, 1, 255]]


def test_palette_files_with_index_maps_and_shared_colours():
    from segprep.palette import PALETTES, Palette, PaletteError, shipped

    for name in PALETTES:  # every shipped palette loads, and its map only names its classes
        p = shipped(name)
        assert all(t < p.num_classes or t == 255 for _, t in p.index_map)
    ade = shipped("ade20k")
    assert ade.num_classes == 150 and dict(ade.index_map)[0] == 255 and dict(ade.index_map)[150] == 149
    assert ade.shared_color is not None  # road and skyscraper share a colour in ADE20K's own map
    p = Palette.from_json({"names": ["x", "y"], "colors": [[0, 0, 0], [1, 1, 1]], "index_map": {"0": 0, "255": 1}})
    assert Palette.from_json(p.to_json()) == p
    with pytest.raises(PaletteError, match="maps 3 to 7"):
        Palette.from_json({"names": ["x"], "colors": [[0, 0, 0]], "index_map": {"3": 7}})
    with pytest.raises(PaletteError, match='keys must be mask values such as "7"'):
        Palette.from_json({"names": ["x"], "colors": [[0, 0, 0]], "index_map": {"road": 0}})
    with pytest.raises(PaletteError, match="used by both"):  # without a map, colours must be unique
        Palette.from_json({"names": ["x", "y"], "colors": [[0, 0, 0], [0, 0, 0]]})
