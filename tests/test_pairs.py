"""Pairs by pattern: what a pattern matches, how images and masks pair, where splits come from, what is refused."""

from __future__ import annotations

import os

import pytest

from pipelines import prepare
from segprep import layouts, pairs
from segprep.pairs import LayoutError, LayoutSpec, Pattern


def touch(root, *rels):
    for rel in rels:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def test_pattern_fields_match_format_and_glob():
    p = Pattern.parse("--images", "leftImg8bit/{split}/*/{id}_leftImg8bit.png")
    m = p.match("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    assert (m.image_id, m.split, m.stars) == ("aachen_000000_000019", "train", ("aachen",))
    assert p.match("leftImg8bit/train/a/b/x_leftImg8bit.png") is None  # * and {id} stay inside one segment
    assert p.match("leftImg8bit/train/aachen/x_gtFine_color.png") is None
    assert p.format("x", "val", ("bonn",)) == "leftImg8bit/val/bonn/x_leftImg8bit.png"
    assert p.glob() == "leftImg8bit/*/*/*_leftImg8bit.png"
    # regex characters in literal parts are literal
    q = Pattern.parse("--images", "a+b (1)/[x]{id}.tif")
    assert q.match("a+b (1)/[x]7.tif").image_id == "7" and q.match("aab (1)/x7.tif") is None


@pytest.mark.parametrize("text, why", [
    ("/abs/{id}.png", "relative"), ("a/../{id}.png", "'..'"), ("a\\{id}.png", "relative"),
    ("{name}/{id}.png", "only the fields"), ("{id}/{id}.png", "once each"), ("images/*.png", "needs {id}"),
    ("{split}{id}.png", "literal text between"), ("a//{id}.png", "empty"),
])
def test_bad_patterns_are_usage_errors_naming_the_flag(text, why):
    with pytest.raises(LayoutError, match=r"--images .*" + why.replace("(", r"\(").replace("[", r"\[")):
        Pattern.parse("--images", text)


def test_listing_skips_dotfiles_and_folders_and_pairs_by_id_split_and_star(tmp_path):
    root = str(tmp_path)
    touch(root, "img/train/a/1.jpg", "img/train/a/2.jpg", "img/train/b/1.jpg", "img/val/c/3.jpg",
          "img/train/a/._1.jpg", "img/.hidden/x/9.jpg", "img/train/a/notes.txt",
          "lab/train/a/1.png", "lab/train/b/1.png", "lab/val/c/3.png", "lab/train/a/7.png")
    os.makedirs(os.path.join(root, "img/train/a/4.jpg"))  # a folder named like an image is not one
    listing = layouts.find(root, LayoutSpec("img/{split}/*/{id}.jpg", "lab/{split}/*/{id}.png"))
    assert listing.source == "pattern" and listing.splits == ["train", "val"]
    train = {(p.image_id, p.image, p.mask, p.reason) for p in listing.pairs("train")}
    # "1" is in two folders of train: both keep their pair, named by folder
    assert ("a/1", "img/train/a/1.jpg", "lab/train/a/1.png", "") in train
    assert ("b/1", "img/train/b/1.jpg", "lab/train/b/1.png", "") in train
    assert ("2", "img/train/a/2.jpg", None, "missing_mask") in train
    assert ("7", None, "lab/train/a/7.png", "missing_image") in train
    assert len(train) == 4
    errors = {p.image_id: p.error for p in listing.pairs("train") if p.reason}
    assert errors["2"] == "no mask for image img/train/a/2.jpg: looked for lab/train/a/2.png"
    assert errors["7"] == "no image for mask lab/train/a/7.png: looked for img/train/a/7.jpg"
    assert [(p.image_id, p.reason) for p in listing.pairs("val")] == [("3", "")]


def test_splits_without_any_mask_are_left_out_unless_named(tmp_path):
    root = str(tmp_path)
    touch(root, "Train/images/1.png", "Train/masks/1.png", "Test/images/2.png")
    spec = LayoutSpec("{split}/images/{id}.png", "{split}/masks/{id}.png")
    listing = layouts.find(root, spec)
    assert listing.splits == ["Train"] and "Test" in listing.skipped
    named = layouts.find(root, spec, "Train,Test")
    assert [p.reason for p in named.pairs("Test")] == ["missing_mask"]
    with pytest.raises(LayoutError, match="Unknown split val in --splits: .* has Test, Train"):
        layouts.find(root, spec, "val")


def test_split_lists_with_the_ids_making_the_paths_list_nothing_and_check_ids(tmp_path):
    root = str(tmp_path)
    touch(root, "JPEGImages/a.jpg", "SegmentationClass/a.png")
    os.makedirs(os.path.join(root, "ImageSets/Segmentation"))
    with open(os.path.join(root, "ImageSets/Segmentation/train.txt"), "w") as f:
        f.write("a\nb\n../../etc/passwd\n/abs\nsub/ok\nwin\\dir\n")
    listing = layouts.find(root, LayoutSpec())
    assert listing.listed is None and listing.counts == {"train": 6}  # read again, inside the pipeline
    got = {p.image_id: (p.image, p.reason) for p in listing.pairs("train")}
    assert got["a"] == ("JPEGImages/a.jpg", "") and got["b"] == ("JPEGImages/b.jpg", "")  # missing: found on read
    assert got["sub/ok"] == ("JPEGImages/sub/ok.jpg", "")
    for bad in ("../../etc/passwd", "/abs", "win\\dir"):
        assert got[bad] == (None, "bad_id")


def test_split_lists_with_a_star_find_each_id_in_its_folder(tmp_path):
    root = str(tmp_path)
    touch(root, "img/x/a.jpg", "img/y/b.jpg", "img/y/c.jpg", "img/z/c.jpg", "lab/x/a.png")
    touch(root, "lists/train.txt")
    with open(os.path.join(root, "lists/train.txt"), "w") as f:
        f.write("a\nb\nc\nd\n")
    listing = layouts.find(root, LayoutSpec("img/*/{id}.jpg", "lab/*/{id}.png", "lists/{split}.txt"))
    got = {p.image_id: (p.image, p.mask, p.reason) for p in listing.pairs("train")}
    assert got["a"] == ("img/x/a.jpg", "lab/x/a.png", "")
    assert got["b"] == ("img/y/b.jpg", None, "missing_mask")
    assert got["c"][2] == "ambiguous_id" and got["d"][2] == "missing_image"


def test_val_fraction_is_seeded_exact_and_keeps_groups_together(tmp_path):
    root = str(tmp_path)
    ids = [f"area{a}_{r}_{c}" for a in range(6) for r in range(2) for c in range(2)]
    touch(root, *[f"tiles/{i}.tif" for i in ids], *[f"labels/{i}.png" for i in ids])
    spec = LayoutSpec("tiles/{id}.tif", "labels/{id}.png", val_fraction=0.25)
    a, b = layouts.find(root, spec, seed=0), layouts.find(root, spec, seed=0)
    assert [p.image_id for p in a.pairs("val")] == [p.image_id for p in b.pairs("val")]
    assert a.counts == {"train": 18, "val": 6}  # round(0.25 × 24)
    other = layouts.find(root, spec, seed=1)
    assert {p.image_id for p in other.pairs("val")} != {p.image_id for p in a.pairs("val")}
    grouped = layouts.find(root, LayoutSpec("tiles/{id}.tif", "labels/{id}.png", val_fraction=0.34,
                                          group_by=r"^(area\d+)_"), seed=0)
    val_areas = {p.image_id.split("_")[0] for p in grouped.pairs("val")}
    train_areas = {p.image_id.split("_")[0] for p in grouped.pairs("train")}
    assert len(val_areas) == 2 and not val_areas & train_areas  # round(0.34 × 6) areas, whole


def test_where_splits_come_from_is_never_guessed(tmp_path):
    root = str(tmp_path)
    touch(root, "tiles/a.tif", "labels/a.png")
    with pytest.raises(LayoutError, match="no splits found: .*--val_fraction"):
        layouts.find(root, LayoutSpec("tiles/{id}.tif", "labels/{id}.png"))
    with pytest.raises(LayoutError, match="--val_fraction: the splits already come from {split}"):
        layouts.find(root, LayoutSpec("{split}/{id}.tif", "{split}/{id}.png", val_fraction=0.1))
    with pytest.raises(LayoutError, match="--group_by works with --val_fraction"):
        layouts.find(root, LayoutSpec("tiles/{id}.tif", "labels/{id}.png", group_by="(.*)"))
    with pytest.raises(LayoutError, match="has 2 '\\*' but --images"):
        layouts.find(root, LayoutSpec("a/*/{id}.tif", "b/*/*/{id}.png", val_fraction=0.5))


def test_a_known_archive_in_vocs_place_is_named_with_its_flags(tmp_path):
    root = str(tmp_path)
    touch(root, "images/training/ADE_train_1.jpg", "annotations/training/ADE_train_1.png")
    with pytest.raises(LayoutError, match="It looks like ADE20K: pass --images 'images/{split}/{id}.jpg'"):
        layouts.find(root, LayoutSpec())


def test_prepare_usage_errors_for_layouts_are_one_line_exit_2(tmp_path, capsys):
    touch(str(tmp_path), "tiles/a.tif", "labels/a.png")
    base = ["--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--runner=DirectRunner"]
    for flags, says in ((["--images", "tiles/{id}.tif", "--masks", "labels/{id}.png"], "--val_fraction F"),
                        (["--images", "tiles/{name}.tif"], "knows only the fields"),
                        (["--val_fraction", "1.5"], "between 0 and 1"),
                        (["--bands", "1,2"], "3 band numbers"),
                        (["--image_range", "9,3"], "LO < HI"),
                        (["--palette", "nope"], "no palette named 'nope' (shipped: voc, cityscapes")):
        assert prepare.main(base + flags) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "out")


def test_listing_ten_thousand_files_by_pattern_reads_each_folder_once(tmp_path, monkeypatch):
    root = str(tmp_path)
    for split in ("train", "val"):
        for folder in ("img", "lab"):
            os.makedirs(os.path.join(root, split, folder))
    for i in range(5000):
        split = "train" if i % 5 else "val"
        touch(root, f"{split}/img/{i:05d}.tif", f"{split}/lab/{i:05d}.png")
    calls = []
    real = os.scandir
    monkeypatch.setattr(pairs.os, "scandir", lambda path: (calls.append(path), real(path))[1])
    listing = layouts.find(root, LayoutSpec("{split}/img/{id}.tif", "{split}/lab/{id}.png"))
    assert listing.counts == {"train": 4000, "val": 1000}
    assert len(calls) == 6  # root, then train/img and val/img; root, then train/lab and val/lab


def test_a_tree_whose_splits_all_lack_masks_is_one_usage_error_for_every_tool(tmp_path):
    touch(str(tmp_path), "Train/images/1.png", "Test/images/2.png")
    with pytest.raises(LayoutError, match="no split has masks to read; Test: 1 images, no mask matches"):
        layouts.find(str(tmp_path), LayoutSpec("{split}/images/{id}.png", "{split}/masks/{id}.png"))


def test_many_masks_without_images_are_named_in_linear_time(tmp_path):
    root = str(tmp_path)
    touch(root, *[f"img/{i}.png" for i in range(3000)], *[f"lab/{i}.png" for i in range(3000, 6000)])
    listing = layouts.find(root, LayoutSpec("img/{id}.png", "lab/{id}.png", val_fraction=0.5))
    reasons = [p.reason for s in listing.splits for p in listing.pairs(s)]
    assert reasons.count("missing_mask") == 3000 and reasons.count("missing_image") == 3000
