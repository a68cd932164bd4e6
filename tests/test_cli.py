"""The command line as a user meets it: one-line errors with exit status 2, and the bundled sample."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, read_records, shard_files
from segprep import codec, layout, sample


def prepare_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "pipelines.prepare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--input_dir", "/no/such/dir"], "--input_dir /no/such/dir does not exist"),
    (["--input_dir", "."], "is not in Pascal VOC layout"),
    (["--splits", "nope"], "Unknown split nope"),
    (["--crops_per_image", "many"], "positive integer or 'auto'"),
    (["--crop_sise", "64"], "unknown flag --crop_sise"),
    (["--unknown_colors", "guess"], "invalid choice"),
    (["--palette", "/no/palette.json"], "--palette /no/palette.json"),
    (["--random_crop_splits", "trian"], "Unknown split trian in --random_crop_splits: this run has train, val"),
    (["--jpeg_quality", "0"], "--jpeg_quality: must be an integer from 1 to 100"),
    (["--jpeg_quality", "101"], "--jpeg_quality: must be an integer from 1 to 100"),
    (["--color_tolerance", "-1"], "--color_tolerance: must be a number > 0"),
    (["--color_tolerance", "nan"], "--color_tolerance: must be a number > 0"),
    (["--cat_max_ratio", "0"], "--cat_max_ratio: must be a number > 0 and ≤ 1"),
    (["--cat_max_ratio", "1.5"], "--cat_max_ratio: must be a number > 0 and ≤ 1"),
    (["--cat_max_ratio", "nan"], "--cat_max_ratio: must be a number > 0 and ≤ 1"),
    (["--seed", "-1"], "--seed: must be an integer ≥ 0"),
    (["--runner=DirectRuner"], "--runner DirectRuner: not a Beam runner (Beam knows DataflowRunner"),
    (["--direct_num_workers=abc"], "argument --direct_num_workers: invalid int value: 'abc'"),
    (["--runner=DataflowRunner"], "--runner DataflowRunner needs --project, --region, --temp_location"),
    (["--runner=DataflowRunner", "--project", "p", "--temp_location", "gs://b/t"], "needs --region"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, voc_tree, args, message):
    if "--input_dir" not in args:
        args = ["--input_dir", voc_tree.root, *args]
    proc = prepare_cli(*args, "--output_dir", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--splits", "nope"], "Unknown split nope in --splits: the bundled sample lists train, val"),
    (["--jpeg_quality", "0"], "--jpeg_quality"),
    (["--random_crop_splits", "trian"], "Unknown split trian"),
    (["--bogus_flag"], "unknown flag --bogus_flag"),
])
def test_mistakes_with_the_bundled_sample_write_nothing_not_even_the_sample(tmp_path, args, message):
    proc = prepare_cli(*args, "--runner=DirectRunner", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr
    assert os.listdir(tmp_path) == []


def test_failed_inputs_exit_1_and_name_the_errors_file(tmp_path, voc_tree):
    os.remove(layout.mask_path(voc_tree.root, "t2"))
    proc = prepare_cli("--input_dir", voc_tree.root, "--output_dir", str(tmp_path / "out"), "--crop_size", "64",
                       "--runner=DirectRunner", cwd=tmp_path)
    assert proc.returncode == 1
    assert "1 failed" in proc.stdout and "errors/train.jsonl" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_prepare_shows_progress_and_limit_takes_the_first_ids(tmp_path, voc_tree):
    env_cli = dict(os.environ, PYTHONPATH=REPO, SEGPREP_PROGRESS_SECONDS="0")
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--input_dir", voc_tree.root, "--output_dir",
                           str(tmp_path / "out"), "--crop_size", "64", "--limit", "2", "--runner=DirectRunner"],
                          cwd=tmp_path, env=env_cli, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("prepare: ")]
    assert lines and lines[-1].startswith("prepare: 4/4 images, "), proc.stderr  # 2 of train + 2 of val
    assert "failed" in lines[-1] and "crops" in lines[-1]
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["splits"]["train"]["images_listed"] == 2 and meta["flags"]["limit"] == 2


def test_default_command_makes_and_converts_the_bundled_sample(tmp_path):
    proc = prepare_cli("--runner=DirectRunner", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "crops/s" in proc.stdout and "0 failed" in proc.stdout
    out = tmp_path / "data" / "records"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["splits"]["train"]["images_used"] == sample.NUM_TRAIN
    assert meta["splits"]["val"]["images_used"] == len(sample.SIZES) - sample.NUM_TRAIN
    counts = np.array(meta["splits"]["train"]["class_pixels"])
    assert all(counts[c] > 0 for c in sample.CLASSES.values()) and meta["splits"]["train"]["ignore_pixels"] > 0
    records = read_records(shard_files(str(out), "val"))
    assert len(records) == meta["splits"]["val"]["records"]
    assert {r["mask"].shape for r in records} == {(256, 256)}


def test_sample_tree_has_what_it_promises(tmp_path):
    root = sample.ensure_sample(str(tmp_path / "s"))
    kinds, sizes, border = set(), [], False
    for i, (w, h) in enumerate(sample.SIZES):
        image_id = f"2026_{i + 1:06d}"
        mask, kind = codec.decode_mask(open(layout.mask_path(root, image_id), "rb").read())
        kinds.add(kind)
        sizes.append((w, h))
        border |= bool((mask == (224, 224, 192)).all(-1).any())
        assert codec.decode_image(open(layout.image_path(root, image_id), "rb").read()).shape == (h, w, 3)
    assert kinds == {"color", "palette"} and border
    assert any(max(s) > 1000 for s in sizes) and any(min(s) < 256 for s in sizes)
    # Deterministic: made again, the same bytes.
    again = sample.ensure_sample(str(tmp_path / "t"))
    for sub in (layout.IMAGE_DIR, layout.MASK_DIR):
        for name in os.listdir(os.path.join(root, sub)):
            assert open(os.path.join(root, sub, name), "rb").read() == \
                open(os.path.join(again, sub, name), "rb").read()


def test_help_shows_examples():
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--runner=DataflowRunner" in proc.stdout and "--crops_per_image" in proc.stdout


@pytest.mark.parametrize("module, args, message", [
    ("trainer.train", ["--data_dir", "nowhere"], "No nowhere/metadata.json"),
    ("trainer.train", ["--epochs", "0", "--data_dir", "nowhere"], "--epochs: must be a positive integer"),
    ("trainer.predict", ["--model_dir", "nowhere", "--input", "."], "No nowhere/model.keras"),
    ("trainer.predict", ["--input", "photo.jpg"], "No runs/latest/model.keras"),  # never trained here
    ("trainer.evaluate", ["--model_dir", "nowhere"], "No nowhere/model.keras"),
    ("trainer.evaluate", ["--bogus"], "unrecognized arguments: --bogus"),
])
def test_trainer_user_mistakes_exit_2_with_one_line(tmp_path, module, args, message):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith(module.split(".")[1] + ":")]
    assert len(ours) == 1 and message in ours[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", ["segprep.scan", "segprep.verify", "segprep.inspect"])
def test_dataset_tools_have_help_with_examples(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and f"python -m {module}" in proc.stdout.split("examples:")[1]
