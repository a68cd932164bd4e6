"""trainer.train's run dir belongs to one run at a time, and --overwrite never reaches through a link."""

import os

from segprep import runlock
from segprep.formats import run_dir
from trainer import train


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
