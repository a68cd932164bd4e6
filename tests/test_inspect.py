"""segprep.inspect: a contact sheet whose crops and masks line up, from shards and from a VOC root."""

import numpy as np
import pytest

from conftest import mask_colors, write_lists, write_pair
from pipelines import prepare
from segprep import codec, layout
from segprep.tools import sheet as inspect
from masks import voc_like_mask


@pytest.fixture
def mirror_tree(tmp_path):
    """Images that are their own colour masks: in a sheet whose panels line up, image == mask, pixel for pixel."""
    root = str(tmp_path / "voc")
    ids = []
    for i in range(6):
        classes = voc_like_mask(i, 90, 120)
        write_pair(root, f"m{i}", mask_colors()[classes], classes)
        with open(layout.image_path(root, f"m{i}"), "wb") as f:  # lossless, so the comparison can be exact
            f.write(codec.encode_image(mask_colors()[classes], "png"))
        ids.append(f"m{i}")
    write_lists(root, {"train": ids[:4], "val": ids[4:]})
    return root


def panels(sheet, index, count, side):
    x, y = inspect.panel_origins(count, side, 30)[index]
    return [sheet[y:y + side, x + i * (side + inspect.GAP):x + i * (side + inspect.GAP) + side] for i in range(3)]


def test_sheet_of_shards_shows_aligned_crops_masks_and_overlays(mirror_tree, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert prepare.run(["--input_dir", mirror_tree, "--output_dir", out, "--crop_size", "48", "--crops_per_image",
                        "5", "--image_format", "png", "--runner=DirectRunner"]) == 0
    sheet_path = tmp_path / "sheet.png"
    assert inspect.main([out, "--output", str(sheet_path), "--count", "6", "--seed", "1"]) == 0
    assert "6 samples" in capsys.readouterr().out
    sheet = codec.decode_image(sheet_path.read_bytes())
    border = tuple(mask_colors()[255])
    for i in range(6):
        image, mask, overlay = panels(sheet, i, 6, 48)
        assert not (mask == inspect.PAPER).all(axis=-1).all(), "an empty panel"
        valid = ~(mask == border).all(-1)  # padding past a small image's edge is 0 in the image, 255 in the mask
        np.testing.assert_array_equal(image[valid], mask[valid])  # the crop and its mask line up exactly
        assert np.abs(overlay.astype(int) - mask.astype(int))[valid].max() <= 1
    # Another seed shows other crops.
    assert inspect.main([out, "--output", str(tmp_path / "other.png"), "--count", "6", "--seed", "2"]) == 0
    assert not np.array_equal(codec.decode_image((tmp_path / "other.png").read_bytes()), sheet)


def test_sheet_of_a_voc_root_checks_alignment_before_prepare(mirror_tree, tmp_path):
    sheet_path = tmp_path / "pairs.png"
    assert inspect.main([mirror_tree, "--output", str(sheet_path), "--count", "3", "--split", "train"]) == 0
    sheet = codec.decode_image(sheet_path.read_bytes())
    for i in range(3):
        image, mask, _ = panels(sheet, i, 3, 120)
        content = ~(image == inspect.PAPER).all(-1)
        assert content.sum() == 90 * 120
        np.testing.assert_array_equal(image[content], mask[content])


def test_usage_mistakes(tmp_path, capsys):
    assert inspect.main([str(tmp_path), "--output", str(tmp_path / "x.png")]) == 2
    assert "holds no metadata.json" in capsys.readouterr().err
    assert inspect.main([str(tmp_path), "--count", "0"]) == 2
