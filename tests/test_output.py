"""prepare's output dir belongs to the user: --overwrite deletes what a segprep run recorded as its own and nothing
else, never through a link; a name prepare writes is never taken from a file it did not write; one run at a time."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from pipelines import output, prepare
from segprep import layout, runlock
from segprep.formats.shards import TEMP_JOURNAL, TEMP_MARKER, TEMP_PREFIX

BEAM = ["--runner=DirectRunner"]
FLAGS = ["--crop_size", "64", "--crops_per_image", "2"]


def run(root, out, *flags):
    return prepare.run(["--input_dir", root, "--output_dir", str(out), *FLAGS, *flags, *BEAM])


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`, links read as their targets' names."""
    found = {}
    for here, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(here, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[rel] = "link → " + os.readlink(path)
            elif name in names:
                found[rel] = open(path, "rb").read()
    return found


def users_files(out):
    """A finished run's dir to which the user added files of their own, some named like segprep's."""
    (out / "notes.txt").write_text("my notes")
    (out / "errors" / "my-own.jsonl").parent.mkdir(exist_ok=True)
    (out / "errors" / "my-own.jsonl").write_text('{"mine": true}\n')
    (out / (TEMP_PREFIX + "mine")).mkdir()
    (out / (TEMP_PREFIX + "mine") / "thesis.tex").write_text("years of work")
    return {rel: data for rel, data in snapshot(out).items()
            if not rel.startswith(("train", "val", "metadata", "dataset_info", "features"))}


def test_overwrite_deletes_only_what_the_earlier_run_recorded(voc_tree, tmp_path, capsys):
    out = tmp_path / "out"
    with open(layout.split_path(voc_tree.root, "train"), "a") as f:
        f.write("ghost\n")  # an id without files: the run records errors/train.jsonl
    assert run(voc_tree.root, out) == 1
    mine = users_files(out)
    (out / "train-00000-of-00009.tfrecord").write_bytes(b"a stray shard no metadata.json lists")
    capsys.readouterr()
    # A file under a name prepare writes, that no run recorded: refused with or without --overwrite; untouched.
    for flags in ([], ["--overwrite"]):
        before = snapshot(out)
        with pytest.raises(prepare.UsageError) as e:
            run(voc_tree.root, out, *flags)
        assert "holds train-00000-of-00009.tfrecord, which no segprep run recorded" in str(e.value)
        assert snapshot(out) == before
    os.remove(out / "train-00000-of-00009.tfrecord")
    # Without --overwrite the refusal names the run's own files only.
    with pytest.raises(prepare.UsageError) as e:
        run(voc_tree.root, out, "--seed", "3")
    assert "already holds a finished segprep run (6 files: 2 shards, e.g. train-00000-of-00001.tfrecord)" \
        in str(e.value)
    assert not any(name in str(e.value) for name in ("notes", "my-own", "thesis", "mine"))
    assert run(voc_tree.root, out, "--seed", "3", "--overwrite") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith(f"prepare: --overwrite: deleted 6 files of earlier segprep runs in "
                                               f"{out}; left in place 3 that no segprep run recorded: ")
    assert all(name in err[0] for name in ("notes.txt", "errors/my-own.jsonl", TEMP_PREFIX + "mine"))
    after = snapshot(out)
    assert {rel: after.get(rel) for rel in mine} == mine  # every file of the user's, byte for byte
    assert json.loads(after["metadata.json"])["seed"] == 3 and b'"id": "ghost"' in after["errors/train.jsonl"]


def test_overwrite_never_follows_a_link_out_of_the_output_dir(voc_tree, tmp_path, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "train-00000-of-00001.tfrecord").write_bytes(b"the user's")
    (elsewhere / "train.jsonl").write_text("the user's")
    (elsewhere / TEMP_MARKER).write_text("{}")  # even a folder that looks like a temp dir of ours
    assert run(voc_tree.root, out) == 0
    os.symlink(elsewhere, out / (TEMP_PREFIX + "x"))
    before = snapshot(elsewhere)
    assert run(voc_tree.root, out, "--overwrite") == 0
    assert snapshot(elsewhere) == before and os.path.islink(out / (TEMP_PREFIX + "x"))
    assert "left in place 1 that no segprep run recorded: .segprep-tmp-x" in capsys.readouterr().err
    # Links under names prepare writes are in the way, not deleted: a shard, the errors folder.
    for name, target in (("val-00000-of-00001.tfrecord", elsewhere / "train-00000-of-00001.tfrecord"),
                         ("errors", elsewhere)):
        fresh = tmp_path / f"out-{name}"
        assert run(voc_tree.root, fresh) == 0
        if os.path.exists(fresh / name):
            os.remove(fresh / name)
        os.symlink(target, fresh / name)
        with pytest.raises(prepare.UsageError, match=f"holds {name}, which no segprep run recorded"):
            run(voc_tree.root, fresh, "--overwrite")
        assert snapshot(elsewhere) == before


def test_a_run_killed_while_moving_its_shards_into_place_is_segprep_s_to_remove(voc_tree, tmp_path, capsys):
    """Its temp dir's journal names the shards it moved before it died: they are refused without --overwrite,
    deleted with it, and a file the journal does not name is not."""
    out = tmp_path / "out"
    temp = out / (TEMP_PREFIX + "killed")
    temp.mkdir(parents=True)
    (temp / TEMP_MARKER).write_text("{}")
    (temp / TEMP_JOURNAL).write_text(json.dumps(["train-00000-of-00003.tfrecord",
                                                         "train-00001-of-00003.tfrecord", "errors/train.jsonl"]))
    (temp / "train-00001-of-00003.tfrecord").write_bytes(b"not moved yet")
    (out / "train-00000-of-00003.tfrecord").write_bytes(b"moved")
    (out / "errors").mkdir()
    (out / "errors" / "train.jsonl").write_text("{}\n")
    (out / "errors" / "notes.jsonl").write_text("mine\n")
    with pytest.raises(prepare.UsageError, match=r"already holds files of an unfinished segprep run \(2 files: 1 "
                                                 r"shards, e\.g\. train-00000-of-00003\.tfrecord\); pass --overwrite"):
        run(voc_tree.root, out)
    assert run(voc_tree.root, out, "--overwrite") == 0
    assert sorted(os.listdir(out)) == ["dataset_info.json", "errors", "features.json", "metadata.json",
                                       "train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]
    assert os.listdir(out / "errors") == ["notes.jsonl"]


def test_the_journal_and_marker_are_written_before_the_files_they_name(voc_tree, tmp_path):
    """finalize's order: the journal in the temp dir before any file reaches its final name, metadata.json after
    every shard, TFDS's files (which metadata.json records) after it, the temp dir removed last."""
    out = tmp_path / "out"
    job = prepare.plan(["--input_dir", voc_tree.root, "--output_dir", str(out), *FLAGS, *BEAM])
    output.mark(job.spec)
    assert os.listdir(job.spec.temp_dir) == [TEMP_MARKER]
    events = []
    real_rename, real_write = output.storage.rename, output._write_text
    output.storage.rename = lambda src, dst: (events.append(("move", [os.path.basename(d) for d in dst])),
                                              real_rename(src, dst))
    output._write_text = lambda path, text: (events.append(("write", path[len(str(out)) + 1:])),
                                             real_write(path, text))
    try:
        output.finalize(job.spec, [], [], [])
    finally:
        output.storage.rename, output._write_text = real_rename, real_write
    journal = f"{os.path.basename(job.spec.temp_dir)}/{TEMP_JOURNAL}"
    assert events == [("write", journal), ("move", ["train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]),
                      ("write", "metadata.json"), ("write", "dataset_info.json"), ("write", "features.json")]
    assert not os.path.exists(job.spec.temp_dir)


def _prepare_cmd(root, out, seed):
    return [sys.executable, "-m", "pipelines.prepare", "--input_dir", root, "--output_dir", str(out), *FLAGS,
            "--seed", str(seed), *BEAM]


def test_of_two_runs_started_together_into_one_dir_one_refuses(voc_tree, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = {seed: subprocess.Popen(_prepare_cmd(voc_tree.root, out, seed), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for seed in (0, 7)}
    results = {seed: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for seed, p in procs.items()}
    won = [seed for seed, (status, _, _) in results.items() if status == 0]
    lost = [seed for seed, (status, _, _) in results.items() if status != 0]
    assert len(won) == 1 and len(lost) == 1, results
    status, stdout, stderr = results[lost[0]]
    assert status == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    # Refused by the lock while the other ran, or by the other's finished run if it was done before.
    assert ("is being written by `python -m pipelines.prepare` (pid" in stderr
            or "already holds a finished segprep run" in stderr), stderr
    assert json.load(open(out / "metadata.json"))["seed"] == won[0]


def test_the_lock_names_its_holder_and_a_killed_holder_leaves_it_free(tmp_path):
    folder = str(tmp_path / "out")
    with runlock.hold(folder, "python -m pipelines.prepare"):
        with pytest.raises(runlock.FolderError) as e:
            with runlock.hold(folder, "python -m trainer.train"):
                pass
        assert f"{folder} is being written by `python -m pipelines.prepare` (pid {os.getpid()} on " in str(e.value)
    assert not os.path.exists(folder)  # released: the lock file goes, and so does the folder the run made empty
    os.makedirs(folder)
    with runlock.hold(folder, "python -m pipelines.prepare"):
        pass
    assert os.listdir(folder) == []  # a folder that was there stays
    code = ("import sys, time\nfrom segprep import runlock\n"
            "with runlock.hold(sys.argv[1], 'holder'):\n    print('held', flush=True)\n    time.sleep(300)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, folder], env=dict(os.environ, PYTHONPATH=REPO),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(runlock.FolderError, match=f"`holder` \\(pid {holder.pid} on "):
        with runlock.hold(folder, "second"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert os.path.exists(os.path.join(folder, runlock.LOCK_NAME))  # left behind by the kill, but not held
    started = time.time()
    with runlock.hold(folder, "third"):
        assert json.load(open(os.path.join(folder, runlock.LOCK_NAME)))["command"] == "third"
    assert time.time() - started < 5


@pytest.mark.parametrize("flag", ["--output_dir", "--spill_dir"])
def test_an_output_that_is_a_file_is_one_line(voc_tree, tmp_path, capsys, flag):
    target = tmp_path / "a-file"
    target.write_text("mine")
    argv = ["--input_dir", voc_tree.root, "--output_dir", str(tmp_path / "out"), flag, str(target), *BEAM]
    assert prepare.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"prepare: error: {flag} {target} is a file, not a folder: choose another {flag}."]
    assert target.read_text() == "mine"


def test_a_read_only_output_dir_is_one_line(voc_tree, tmp_path):
    """A real read-only disk: a read-only bind mount in a user and mount namespace of the run's own (root ignores
    file modes, so chmod alone proves nothing here)."""
    import shlex
    import shutil

    out = tmp_path / "readonly"
    out.mkdir()
    if not shutil.which("unshare") or subprocess.run(["unshare", "-Urm", "mount", "--bind", "-o", "ro", str(out),
                                                      str(out)], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -Urm (util-linux, user namespaces) to mount a read-only folder")
    for target in (out, out / "sub"):
        cmd = shlex.join(_prepare_cmd(voc_tree.root, target, 0))
        script = f"mount --bind -o ro {shlex.quote(str(out))} {shlex.quote(str(out))} || exit 90\n{cmd}\n"
        proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script], env=dict(os.environ, PYTHONPATH=REPO),
                              capture_output=True, text=True, timeout=300)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert err[0].startswith("prepare: error: --output_dir: cannot ") and "Read-only file system" in err[0]
        assert "choose a folder you can write" in err[0]
    assert os.listdir(out) == []


def test_a_run_killed_before_its_marker_leaves_an_empty_temp_dir_that_is_named_and_removed(voc_tree, tmp_path, capsys):
    """Killed between making its temp dir and writing the marker in it (the kill the SIGKILL test in test_spill.py
    can land on): the folder holds nothing to lose, so it counts as segprep's."""
    out = tmp_path / "out"
    (out / (TEMP_PREFIX + "killed")).mkdir(parents=True)
    assert run(voc_tree.root, out) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"prepare: {out} holds the temp files of an unfinished run ({TEMP_PREFIX}killed: 0 files); "
                   "--overwrite removes them"]
    assert run(voc_tree.root, out, "--overwrite") == 0
    assert not [n for n in os.listdir(out) if n.startswith(TEMP_PREFIX)]
