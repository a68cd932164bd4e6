"""trainer/train.py (the command) and trainer/run_folders.py: a run dir belongs to one run at a time, --overwrite
starts clean in a segprep run's folder only and never reaches through a link, and the default run dir follows the
recipe."""

import csv
import os

import pytest

from segprep import runlock
from segprep.formats import run_dir
from trainer import run_folders, train


def test_a_second_run_into_a_run_dir_being_written_refuses_naming_the_first(records, tmp_path, capsys):
    run = str(tmp_path / "run")
    with runlock.hold(run, "python -m trainer.train"):
        assert train.main(["--data_dir", records, "--model_dir", run, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"train: error: --model_dir: {run} is being written by `python -m "
                                               f"trainer.train` (pid {os.getpid()} on ")
    assert not os.path.exists(run)  # the refused run wrote nothing; the holder, which made the folder, removed it


def test_a_run_dir_that_is_a_file_is_one_line(records, tmp_path, capsys):
    mine = tmp_path / "model"
    mine.write_text("mine")
    assert train.main(["--data_dir", records, "--model_dir", str(mine), "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train: error: --model_dir {mine} is a file, not a folder: choose another --model_dir."]
    assert mine.read_text() == "mine"


def test_a_link_named_like_a_runs_file_stops_the_run_and_both_stay(records, tmp_path, capsys):
    """A run writes model.keras, log.csv, tensorboard/, ... and --overwrite deletes them: through a link it would
    write into (or empty) the user's folder elsewhere. Refused, with or without --overwrite."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (elsewhere / "events.out").write_text("the user's")
    (run / run_dir.MARKER).write_text("{}")
    (run / "model.keras").write_bytes(b"an earlier run's")
    os.symlink(elsewhere, run / "tensorboard")
    for flags in ([], ["--overwrite"]):
        assert train.main(["--data_dir", records, "--model_dir", str(run), "--epochs", "1", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"train: error: --model_dir {run} holds tensorboard, a symbolic link to {elsewhere}, under a "
                       "name a run writes and deletes: a run never writes or deletes through a link; remove the "
                       "link, or choose another --model_dir."]
    assert sorted(os.listdir(run)) == [run_dir.MARKER, "model.keras", "tensorboard"]
    assert os.listdir(elsewhere) == ["events.out"] and (run / "model.keras").read_bytes() == b"an earlier run's"


def test_overwrite_starts_clean(records, tmp_path):
    run = tmp_path / "run"
    args = ["--data_dir", records, "--model_dir", str(run), "--epochs", "1", "--batch_size", "4", "--width", "8"]
    train.run(args)
    (run / "eval-val.json").write_text("{}")
    (run / "tensorboard" / "stale.txt").write_text("from an earlier run")
    with pytest.raises(train.UsageError, match="--overwrite"):
        train.run(args)
    train.run(args + ["--overwrite"])
    assert not (run / "eval-val.json").exists() and not (run / "tensorboard" / "stale.txt").exists()
    assert [int(r["epoch"]) for r in csv.DictReader(open(run / "log.csv"))] == [0]
    assert (run / run_dir.MARKER).exists() and not (run / "backup").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_is_not_a_segprep_run_is_never_emptied(records, tmp_path, capsys, overwrite):
    mine = tmp_path / "mine"
    (mine / "backup").mkdir(parents=True)
    (mine / "backup" / "thesis.tex").write_text("years of work")
    (mine / "serving").mkdir()
    (mine / "serving" / "model.pb").write_text("someone else's model")
    (mine / "log.csv").write_text("my own log")
    args = ["--data_dir", records, "--model_dir", str(mine), "--epochs", "1"] + (["--overwrite"] if overwrite else [])
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds files no segprep run wrote (e.g. backup)" in err[0]
    assert (mine / "backup" / "thesis.tex").read_text() == "years of work"
    assert (mine / "serving" / "model.pb").exists() and (mine / "log.csv").read_text() == "my own log"
    with pytest.raises(train.UsageError):
        run_folders.clear_run(str(mine))  # the library function refuses too
    assert (mine / "log.csv").exists()


def test_the_default_run_dir_changes_with_the_recipe_and_the_model_revision(monkeypatch):
    """The same command resumes its own run dir; another recipe, or a changed model of this package (an old
    checkpoint would not fit it), gets another one."""

    def run_dir(*argv):
        args = train.build_parser().parse_args(list(argv))
        train._arch_flags(args)
        args.train_split, args.val_split = "train", "val"
        return train._default_model_dir(args)

    default = run_dir()
    assert run_dir() == default
    assert run_dir("--hard_pixels", "1") != default  # the default trains on the hardest 20% of the pixels
    assert run_dir("--seed", "1") != default
    assert run_dir("--train_crop_size", "192") != default
    deconv, backbone = run_dir("--arch", "deconv"), run_dir("--arch", "deeplabv3plus", "--hard_pixels", "1")
    monkeypatch.setattr(train, "MODEL_REVISION", train.MODEL_REVISION - 1)
    assert run_dir() != default and run_dir("--arch", "deconv") != deconv
    assert run_dir("--arch", "deeplabv3plus", "--hard_pixels", "1") == backbone  # its layers are keras.applications'
