"""trainer.train's run dir belongs to one run at a time, and --overwrite never reaches through a link."""

import os

import pytest

from pipelines import prepare
from segprep import runlock
from trainer import train


@pytest.fixture
def records(voc_tree, tmp_path):
    out = str(tmp_path / "records")
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--crop_size", "64",
                        "--crops_per_image", "2", "--runner=DirectRunner"]) == 0
    return out


def test_a_second_run_into_a_run_dir_being_written_refuses_naming_the_first(records, tmp_path, capsys):
    run = str(tmp_path / "run")
    with runlock.hold(run, "python -m trainer.train"):
        assert train.main(["--data_dir", records, "--model_dir", run, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"train: error: --model_dir: {run} is being written by `python -m "
                                               f"trainer.train` (pid {os.getpid()} on ")
    assert os.listdir(run) == []  # the refused run wrote nothing


def test_a_run_dir_that_is_a_file_is_one_line(records, tmp_path, capsys):
    mine = tmp_path / "model"
    mine.write_text("mine")
    assert train.main(["--data_dir", records, "--model_dir", str(mine), "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train: error: --model_dir {mine} is a file, not a folder: choose another --model_dir."]
    assert mine.read_text() == "mine"


def test_overwrite_leaves_links_named_like_a_runs_files_and_what_they_point_to(tmp_path, capsys):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (elsewhere / "events.out").write_text("the user's")
    (elsewhere / "log.csv").write_text("the user's")
    (run / train.RUN_MARKER).write_text("{}")
    (run / "model.keras").write_bytes(b"an earlier run's")
    (run / "backup").mkdir()
    (run / "backup" / "state.json").write_text("{}")
    os.symlink(elsewhere, run / "tensorboard")
    os.symlink(elsewhere / "log.csv", run / "log.csv")
    assert train.clear_run(str(run)) == ["log.csv", "tensorboard"]
    assert sorted(os.listdir(run)) == [train.RUN_MARKER, "log.csv", "tensorboard"]
    assert sorted(os.listdir(elsewhere)) == ["events.out", "log.csv"]
    assert (elsewhere / "log.csv").read_text() == "the user's"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"train: --overwrite: left in place log.csv, tensorboard in {run}: symbolic links, never followed "
                   "or deleted"]
