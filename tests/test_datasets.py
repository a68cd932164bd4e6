"""Each archive docs/datasets.md names, in its exact layout and file kinds, prepared with the
page's own command for it: every crop's image and mask checked against the source and the dataset's class definition;
scan and inspect run on the same tree with the same layout flags."""

from __future__ import annotations

import json
import os
import re
import shlex

import numpy as np
import pytest

import archives
from conftest import REPO, read_records, shard_files
from pipelines import prepare
from segprep import crops
from segprep.palette import IGNORE_LABEL, shipped

LAYOUT_FLAGS = ("--images", "--masks", "--split_lists", "--val_fraction", "--group_by", "--splits", "--palette")


def readme_command(heading: str, which: int = 0) -> list[str]:
    """The flags of the first (or `which`) `python -m pipelines.prepare` command under `## heading` in
    docs/datasets.md."""
    text = open(os.path.join(REPO, "docs", "datasets.md"), encoding="utf-8").read()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^    python -m pipelines\.prepare (.*?)(?:\n\n|\n(?! {4}))", section, re.S | re.M)
    return shlex.split(blocks[which].replace("\\\n", " "))


def with_dirs(flags: list[str], root: str, out: str) -> list[str]:
    args = list(flags)
    args[args.index("--input_dir") + 1] = root
    args[args.index("--output_dir") + 1] = out
    return args


def pick(flags: list[str], names=LAYOUT_FLAGS) -> list[str]:
    out = []
    for i, flag in enumerate(flags):
        if flag in names:
            out += [flag, flags[i + 1]]
    return out


def metadata(out) -> dict:
    with open(os.path.join(out, "metadata.json")) as f:
        return json.load(f)


def check_crops(out: str, split: str, truth_image, truth_classes, crop: int = 256, jpeg_error: float = 3.0) -> int:
    """Every record of `split`: its mask is the expected class map cut at its offset (exactly, padding 255), its
    image the source cut there (within JPEG error); → the number of records."""
    records = read_records(shard_files(out, split))
    assert records, f"no records in {split}"
    for r in records:
        sid = r["image/source_id"].decode()
        y, x = (int(v) for v in r["image/crop/offset"])
        box = crops.CropBox(y, x, crop, crop)
        classes = truth_classes(sid)
        assert (r["image/source/height"], r["image/source/width"]) == classes.shape
        np.testing.assert_array_equal(r["mask"], crops.cut(classes, box, IGNORE_LABEL), err_msg=f"{sid} @ {y},{x}")
        want = crops.cut(truth_image(sid), box, 0).astype(int)
        assert np.abs(r["image"].astype(int) - want).mean() < jpeg_error, f"{sid} @ {y},{x}: not its source"
    return len(records)


def run_prepare(heading: str, root: str, out: str, *extra: str, status: int = 0) -> dict:
    flags = with_dirs(readme_command(heading), root, out) + list(extra)
    assert prepare.run(flags) == status
    return metadata(out)


def run_tools(heading: str, root: str, tmp_path, capsys) -> str:
    """scan and inspect on the tree with the command's layout flags; → scan's output."""
    from segprep import scan
    from segprep.tools import sheet as inspect

    flags = readme_command(heading)
    capsys.readouterr()
    assert scan.main(["--input_dir", root, *pick(flags)]) == 0
    printed = capsys.readouterr().out
    sheet = str(tmp_path / "pairs.png")
    layout_and_palette = pick(flags, LAYOUT_FLAGS[:-2] + ("--palette",))
    assert inspect.main([root, "--output", sheet, "--count", "3", *layout_and_palette]) == 0
    assert os.path.getsize(sheet) > 1000
    return printed


def test_cityscapes(tmp_path, capsys):
    root, out = str(tmp_path / "cityscapes"), str(tmp_path / "out")
    a = archives.cityscapes(root)
    meta = run_prepare("Cityscapes", root, out)
    assert list(meta["splits"]) == ["train", "val"]  # test (placeholder labels) is not read
    assert meta["class_names"] == list(shipped("cityscapes").names) and meta["num_classes"] == 19
    for split in ("train", "val"):
        n = check_crops(out, split, lambda i, s=split: a.images[(s, i)], lambda i, s=split: a.classes[(s, i)])
        assert meta["splits"][split]["images_used"] == len([k for k in a.images if k[0] == split])
        assert n == meta["splits"][split]["records"]
    assert meta["splits"]["train"]["crop_mode"] == "random" and meta["splits"]["val"]["crop_mode"] == "tiles"
    assert meta["splits"]["train"]["inputs_failed"] == 0  # the '._' shadow file was never taken for an image
    printed = run_tools("Cityscapes", root, tmp_path, capsys)
    assert "train: 4 masks" in printed and "--palette cityscapes" in printed


def test_ade20k(tmp_path, capsys):
    root, out = str(tmp_path / "ADEChallengeData2016"), str(tmp_path / "out")
    a = archives.ade20k(root)
    meta = run_prepare("ADE20K", root, out)
    assert list(meta["splits"]) == ["training", "validation"]
    assert meta["random_crop_splits"] == ["training"] and meta["num_classes"] == 150
    assert os.path.basename(shard_files(out, "training")[0]) == "training-00000-of-00001.tfrecord"
    for split in ("training", "validation"):
        check_crops(out, split, lambda i, s=split: a.images[(s, i)], lambda i, s=split: a.classes[(s, i)])
    # 0 ("other") is ignored and 150 ("flag") is class 149: the shift the dataset defines
    assert meta["splits"]["training"]["ignore_pixels"] > 0 and meta["splits"]["training"]["class_pixels"][149] > 0
    run_tools("ADE20K", root, tmp_path, capsys)


def test_loveda(tmp_path, capsys):
    root, out = str(tmp_path / "LoveDA"), str(tmp_path / "out")
    a = archives.loveda(root)
    meta = run_prepare("LoveDA", root, out)
    assert list(meta["splits"]) == ["Train", "Val"] and meta["random_crop_splits"] == ["Train"]
    for split in ("Train", "Val"):
        check_crops(out, split, lambda i, s=split: a.images[(s, i)], lambda i, s=split: a.classes[(s, i)])
        assert meta["splits"][split]["images_used"] == len([k for k in a.images if k[0] == split])
    run_tools("LoveDA", root, tmp_path, capsys)


def test_potsdam_rgb_rgbir_and_16_bit(tmp_path, capsys):
    root = str(tmp_path / "potsdam")
    a = archives.potsdam(root)
    out = str(tmp_path / "rgb")
    meta = run_prepare("ISPRS Potsdam", root, out)
    assert sorted(meta["splits"]) == ["train", "val"] and meta["splits"]["val"]["images_used"] == 1  # round(0.2 × 5)
    used = 0
    for split in ("train", "val"):
        check_crops(out, split, lambda i: a.images[i], lambda i: a.classes[i], jpeg_error=2.5)
        used += meta["splits"][split]["images_used"]
    assert used == len(archives.POTSDAM_IDS)

    # docs/datasets.md's near-infrared variant: 4-band planar LZW tiles, bands 4, 1, 2
    out = str(tmp_path / "irrg")
    rgbir = ["--images", "4_Ortho_RGBIR/top_potsdam_{id}_RGBIR.tif", "--bands", "4,1,2"]
    meta = run_prepare("ISPRS Potsdam", root, out, *rgbir)
    for split in ("train", "val"):
        check_crops(out, split, lambda i: a.extra[i][..., [3, 0, 1]], lambda i: a.classes[i], jpeg_error=2.5)
    # without --bands every tile is an error record naming its band count, and the run says so
    out = str(tmp_path / "nobands")
    meta = run_prepare("ISPRS Potsdam", root, out, "--images", rgbir[1], status=1)
    errors = [json.loads(line) for line in open(os.path.join(out, "errors", "train.jsonl"))]
    assert {e["reason"] for e in errors} == {"needs_bands"} and "4 bands" in errors[0]["error"]

    # 12-bit data in 16-bit samples: an error naming the range without --image_range, exact with it
    a16 = archives.potsdam(str(tmp_path / "potsdam16"), bits16=True)
    out = str(tmp_path / "bits16")
    run_prepare("ISPRS Potsdam", a16.root, out, *rgbir, status=1)
    errors = [json.loads(line) for line in open(os.path.join(out, "errors", "train.jsonl"))]
    assert errors[0]["reason"] == "needs_image_range" and "16-bit image with values" in errors[0]["error"]
    out = str(tmp_path / "bits16ok")
    run_prepare("ISPRS Potsdam", a16.root, out, *rgbir, "--image_range", "5,4085")
    for split in ("train", "val"):
        check_crops(out, split, lambda i: a.extra[i][..., [3, 0, 1]], lambda i: a.classes[i], jpeg_error=2.5)
    run_tools("ISPRS Potsdam", root, tmp_path, capsys)


def test_potsdam_with_its_dsm_ndsm_and_ir_band_as_the_docs_give_them(tmp_path):
    """docs/datasets.md's second Potsdam command (the DSM by its zero-padded name, the IR band of the RGBIR tile),
    with the nDSM flag the page gives: every extra crop is its source window, at its own depth."""
    from segprep.formats import records as rec
    from segprep.formats import tfrecord

    root, out = str(tmp_path / "potsdam"), str(tmp_path / "out")
    a = archives.potsdam(root)
    text = open(os.path.join(REPO, "docs", "datasets.md"), encoding="utf-8").read()
    ndsm = re.search(r"`(--extra_inputs 'ndsm=[^`]+)`", text).group(1)
    assert prepare.run(with_dirs(readme_command("ISPRS Potsdam", 1), root, out) + shlex.split(ndsm)) == 0
    meta = metadata(out)["extra_inputs"]
    assert (meta["dsm"]["dtype"], meta["ir"]["dtype"], meta["ndsm"]["dtype"]) == ("float32", "uint8", "uint8")
    seen = 0
    for split in ("train", "val"):
        for path in shard_files(out, split):
            for _, data in tfrecord.read(path):
                f = {k: v for k, (_, v) in rec.decode_example(data).items()}
                y, x = (int(v) for v in f[rec.CROP_OFFSET])
                box = crops.CropBox(y, x, 256, 256)
                sid = f[rec.IMAGE_SOURCE_ID][0].decode()
                dsm, ndsm = a.surfaces[sid]
                for name, source in (("dsm", dsm), ("ndsm", ndsm), ("ir", a.extra[sid][..., 3])):
                    key = lambda field, n=name: f[rec.extra_key(n, field)][0]  # noqa: E731
                    crop = rec.ExtraCrop(key("encoded"), key("format").decode(), key("dtype").decode(),
                                         key("channels")).array(256, 256)[..., 0]
                    np.testing.assert_array_equal(crop, crops.cut(source, box, 0), err_msg=f"{name} {sid} {y},{x}")
                seen += 1
    assert seen == sum(s["records"] for s in metadata(out)["splits"].values())


def test_inria(tmp_path, capsys):
    root, out = str(tmp_path / "AerialImageDataset"), str(tmp_path / "out")
    a = archives.inria(root)
    meta = run_prepare("Inria Aerial Image Labeling", root, out)
    assert meta["class_names"] == ["background", "building"]
    for split in ("train", "val"):
        check_crops(out, split, lambda i: a.images[i], lambda i: a.classes[i])
        assert meta["splits"][split]["binary_masks"] == 0 and meta["splits"][split]["class_pixels"][1] > 0
    assert meta["splits"]["val"]["images_used"] == 2  # round(0.2 × 10)
    printed = run_tools("Inria Aerial Image Labeling", root, tmp_path, capsys)
    assert "0 / 255" not in printed  # with the inria palette there is nothing to warn about


def test_inria_without_its_palette_warns_and_scan_names_the_fix(tmp_path, capsys):
    from segprep import scan

    root, out = str(tmp_path / "AerialImageDataset"), str(tmp_path / "out")
    a = archives.inria(root)
    flags = [f for f in readme_command("Inria Aerial Image Labeling")]
    i = flags.index("--palette")
    del flags[i:i + 2]
    capsys.readouterr()
    assert prepare.run(with_dirs(flags, root, out)) == 0
    err = capsys.readouterr().err
    meta = metadata(out)
    share = meta["splits"]["train"]["source_ignore_share"]
    assert meta["splits"]["train"]["binary_masks"] == 8 and 0.2 < share < 0.5
    ignored = sum(round(e["source_ignore_share"] * e["source_pixels"]) for e in meta["splits"].values())
    assert ignored == sum(int(c.sum()) for c in a.classes.values())  # every building pixel, exactly
    assert "train: 8 of 8 masks hold only the values 0 and 255" in err and "--palette inria" in err
    assert f"{100 * share:.1f}%" in err
    assert scan.main(["--input_dir", root, *pick(flags)]) == 0
    printed = capsys.readouterr().out
    assert "0 / 255" in printed and "--palette inria" in printed


def test_deepglobe(tmp_path, capsys):
    root, out = str(tmp_path / "deepglobe"), str(tmp_path / "out")
    a = archives.deepglobe(root)
    meta = run_prepare("DeepGlobe land cover", root, out)
    assert meta["splits"]["val"]["images_used"] == 1 and meta["splits"]["train"]["images_used"] == 9
    for split in ("train", "val"):
        check_crops(out, split, lambda i: a.images[i], lambda i: a.classes[i])
    assert meta["splits"]["train"]["unknown_pixels_snapped"] > 0
    run_tools("DeepGlobe land cover", root, tmp_path, capsys)


@pytest.mark.parametrize("heading", ["Pascal VOC 2012", "Cityscapes", "ADE20K", "LoveDA", "ISPRS Potsdam",
                                     "Inria Aerial Image Labeling", "DeepGlobe land cover"])
def test_every_readme_command_parses_as_prepare_flags(heading):
    args, beam_args = prepare.build_parser().parse_known_args(readme_command(heading))
    assert beam_args == ["--runner=DirectRunner"]
    assert args.palette in (None, "cityscapes", "ade20k", "loveda", "potsdam", "inria", "deepglobe")


def test_the_chain_follows_the_archives_split_names_and_bands(tmp_path, capsys):
    """train, evaluate and predict on prepare's output of a tree whose splits are 'Train'/'Val' (as LoveDA's) and
    whose images are 4-band TIFFs: the trainer picks the splits from metadata.json, and predict reads a new 4-band
    tile with the bands the run was prepared with."""
    from trainer import evaluate, predict, train

    root, out = str(tmp_path / "tiles"), str(tmp_path / "records")
    rng = np.random.default_rng(8)
    for split, count in (("Train", 4), ("Val", 2)):
        for n in range(count):
            rgbir = np.dstack([archives.smooth_image(rng, 128, 128), archives.smooth_image(rng, 128, 128)[..., 0]])
            archives.tiff(f"{root}/{split}/images/{n}.tif", rgbir, photometric="rgb", extrasamples=["unspecified"],
                          compression="deflate")
            labels = archives.blocks(rng, 128, 128, np.arange(8)).astype(np.uint8)
            archives.tiff(f"{root}/{split}/masks/{n}.tif", labels, photometric="minisblack", compression="lzw")
    assert prepare.run(["--input_dir", root, "--output_dir", out, "--images", "{split}/images/{id}.tif",
                        "--masks", "{split}/masks/{id}.tif", "--palette", "loveda", "--bands", "4,1,2",
                        "--crop_size", "64", "--runner=DirectRunner"]) == 0
    run_dir = str(tmp_path / "run")
    train.run(["--data_dir", out, "--model_dir", run_dir, "--epochs", "1", "--batch_size", "4", "--width", "8"])
    printed = capsys.readouterr().out
    assert " Train / " in printed and " Val crops" in printed
    with open(os.path.join(run_dir, "segprep.json")) as f:
        assert json.load(f)["bands"] == [4, 1, 2]
    assert evaluate.main(["--model_dir", run_dir]) == 0
    assert os.path.exists(os.path.join(run_dir, "eval-Val.json"))
    preds = str(tmp_path / "preds")
    assert predict.main(["--model_dir", run_dir, "--input", f"{root}/Val/images/0.tif", "--output_dir", preds]) == 0
    assert sorted(os.listdir(preds)) == [".segprep-predictions.jsonl", "0.png", "0_overlay.jpg"]
