"""A newcomer's first hour: help and usage mistakes answer without importing TensorFlow or Beam, TensorFlow's
import banner stays off stderr (and -v brings it back), the `segprep` command, and docs that resolve inside the
repository."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

# Runs a module as `python -m` does, then reports which heavy packages it imported, as its last stderr line.
_WRAPPER = """
import atexit, json, runpy, sys
def report():
    heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "apache_beam")})
    sys.stderr.write("IMPORTED " + json.dumps(heavy) + "\\n")
atexit.register(report)
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SEGPREP_VERBOSE")}
    env.update(PYTHONPATH=REPO, **extra)
    return env


def run_module(module, *args, cwd):
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, module, *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.splitlines()
    assert lines and lines[-1].startswith("IMPORTED "), proc.stderr
    return proc.returncode, proc.stdout, lines[:-1], json.loads(lines[-1][len("IMPORTED "):])


MODULES = ["pipelines.prepare", "trainer.train", "trainer.predict", "trainer.evaluate", "segprep.scan",
           "segprep.verify", "segprep.inspect", "segprep.commands"]


@pytest.mark.parametrize("module", MODULES)
def test_help_imports_neither_tensorflow_nor_beam_and_ends_with_examples(module, tmp_path):
    status, out, err, heavy = run_module(module, "--help", cwd=tmp_path)
    assert status == 0 and err == [] and heavy == []
    tail = out.split("examples:")[-1]
    assert "examples:" in out and re.search(r"^\s+(python -m|segprep) ", tail, re.M), out


@pytest.mark.parametrize("module, args, message", [
    ("pipelines.prepare", ["--jpeg_quality", "0"], "--jpeg_quality: must be an integer from 1 to 100"),
    ("pipelines.prepare", ["--crop_sise", "64"], "unknown flag --crop_sise"),
    ("pipelines.prepare", ["--input_dir", "/no/such/dir"], "--input_dir /no/such/dir does not exist"),
    ("pipelines.prepare", ["--splits", "nope"], "Unknown split nope"),
    ("pipelines.prepare", ["--spill_dir", "gs://b/x"], "--spill_dir gs://b/x: must be a local directory"),
    ("trainer.train", ["--epochs", "0"], "--epochs: must be a positive integer"),
    ("trainer.train", ["--data_dir", "nowhere"], "No nowhere/metadata.json"),
    ("trainer.train", ["--lr", "-1"], "--lr: must be a number > 0"),
    ("trainer.train", ["--aug_scale", "0,1"], "--aug_scale must be MIN,MAX with 0 < MIN ≤ MAX"),
    ("trainer.predict", ["--model_dir", "nowhere", "--input", "."], "No nowhere/model.keras"),
    ("trainer.predict", ["--input", "x.jpg", "--overlap", "0.95"], "--overlap: must be a number ≥ 0 and ≤ 0.9"),
    ("trainer.evaluate", ["--model_dir", "nowhere"], "No nowhere/model.keras"),
    ("trainer.evaluate", ["--batch_size", "0"], "--batch_size: must be a positive integer"),
    ("segprep.scan", ["--input_dir", "/no/such/dir"], "--input_dir /no/such/dir does not exist"),
    ("segprep.scan", ["--input_dir", ".", "--jobs", "0"], "--jobs: must be -1 (one per core) or a positive"),
    ("segprep.inspect", [".", "--count", "0"], "--count: must be an integer from 1 to 200"),
    ("segprep.inspect", [".", "--output", "x.gif"], "--output x.gif: the sheet is written as PNG or JPEG"),
    ("segprep.verify", ["/no/such/dir"], "/no/such/dir holds no prepare output (no metadata.json, no shards)"),
    ("segprep.commands", ["trian"], "unknown command 'trian'"),
])
def test_usage_mistakes_answer_in_one_line_without_tensorflow_or_beam(module, args, message, tmp_path):
    status, out, err, heavy = run_module(module, *args, cwd=tmp_path)
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert heavy == []
    assert os.listdir(tmp_path) == []  # nothing written, not even the sample


def test_train_on_a_dataset_dir_says_to_prepare_it_elsewhere(tmp_path, capsys):
    from trainer import train

    (tmp_path / "voc" / "JPEGImages").mkdir(parents=True)
    assert train.main(["--data_dir", str(tmp_path / "voc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a dataset, not prepare's output" in err[0]
    assert f"--input_dir {tmp_path / 'voc'} --output_dir data/records" in err[0]  # never into the dataset
    assert os.listdir(tmp_path / "voc") == ["JPEGImages"]


def test_the_segprep_command_runs_each_command_with_its_flags(tmp_path, voc_tree):
    script = os.path.join(os.path.dirname(sys.executable), "segprep")
    assert os.path.exists(script), "pip install -e . makes the console script"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0 and all(f"  {c} " in proc.stdout for c in
                                        ("scan", "prepare", "verify", "inspect", "train", "predict", "evaluate"))
    proc = subprocess.run([script, "train", "--help"], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: segprep train")
    assert "segprep train --data_dir gs://B/records" in proc.stdout  # the examples speak the same form
    out = tmp_path / "records"
    proc = subprocess.run([script, "prepare", "--input_dir", voc_tree.root, "--output_dir", str(out),
                           "--crop_size", "64", "--runner=DirectRunner"], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "metadata.json").exists()
    proc = subprocess.run([script, "verify", str(out)], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0 and "is whole" in proc.stdout


def test_tensorflow_import_banner_stays_off_stderr_and_verbose_brings_it_back():
    """Against this TensorFlow build's own output, not a copy of its words: the verbose import shows what the
    build prints; the quiet one keeps back exactly the lines trainer/lazy.py names as banner."""
    from trainer.lazy import BANNER

    code = "from trainer.lazy import import_tensorflow; tf = import_tensorflow(); print(tf.constant(2).numpy())"
    runs = {}
    for name, env in (("quiet", _env()), ("loud", _env(SEGPREP_VERBOSE="1"))):
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr
        runs[name] = proc.stderr.splitlines()
    banner = [line for line in runs["loud"] if BANNER.search(line)]
    assert banner, ("this TensorFlow prints none of the banner lines trainer/lazy.py knows; if it prints others, "
                    f"add them to BANNER: {runs['loud']}")
    assert not [line for line in runs["quiet"] if BANNER.search(line)], runs["quiet"]
    # What the quiet import still shows is what the build printed that is not banner (warnings pass through).
    assert set(runs["quiet"]) <= {line for line in runs["loud"] if not BANNER.search(line)}, runs


def test_a_real_warning_during_the_import_still_reaches_stderr():
    # A line written to file descriptor 2 while TensorFlow imports, as its C++ code writes: not a banner line.
    from trainer.lazy import BANNER

    code = ("import importlib, os, trainer.lazy as lazy\n"
            "real = importlib.import_module\n"
            "def noisy(name, *a, **k):\n"
            "    if name == 'keras':\n"
            "        os.write(2, b'UserWarning: a real problem\\n')\n"
            "    return real(name, *a, **k)\n"
            "importlib.import_module = noisy\n"
            "lazy.import_tensorflow()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "UserWarning: a real problem" in proc.stderr.splitlines(), proc.stderr
    assert not BANNER.search(proc.stderr), proc.stderr


def test_beam_option_list_is_beams_own():
    import beam_options
    from pipelines import beam_flags

    version, listed = beam_flags._listed()
    regenerate = "regenerate it: .venv/bin/python tests/beam_options.py"
    assert version == beam_flags.installed_version(), f"beam_options.txt is for Beam {version}; {regenerate}"
    assert listed == beam_options.from_beam(), regenerate
    assert {"--runner", "--direct_num_workers", "--project", "--sdk_container_image", "--experiment"} <= listed


def test_with_another_beam_an_unknown_flag_is_still_one_line(monkeypatch, tmp_path, capsys):
    """When the shipped list is for another Beam version, the early check steps aside and prepare's check after
    importing Beam (its public get_all_options) names the mistyped flag."""
    from pipelines import beam_flags, prepare

    monkeypatch.setattr(beam_flags, "installed_version", lambda: "0.0.1")
    assert beam_flags.unknown(["--runer=DirectRunner"]) == []
    assert prepare.main(["--output_dir", str(tmp_path / "out"), "--runer=DirectRunner"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prepare: error: unknown flag --runer: neither a prepare flag (see --help) nor a Beam pipeline "
                   "option."]


def test_readme_and_docs_links_resolve_inside_the_repository():
    for doc in ["README.md", *[os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs"))
                               if n.endswith(".md")]]:
        text = open(os.path.join(REPO, doc)).read()
        assert "../shared" not in text and "CONTRACT.md" not in text
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), path)) if path else \
                os.path.join(REPO, doc)
            assert file.startswith(REPO + os.sep) and os.path.exists(file), f"{doc}: {target}"
            if anchor and file.endswith(".md"):
                headings = [re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                            for h in re.findall(r"^#+ (.+)$", open(file).read(), re.M)]
                assert anchor in headings, f"{doc}: #{anchor} is not a heading of {path or doc}"
    dev = open(os.path.join(REPO, "dev")).read()
    for path in re.findall(r"\b(benchmarks/[\w./]+|docs/[\w./]+)", dev):
        assert os.path.exists(os.path.join(REPO, path)), f"./dev points to {path}"


# --- every mistake one line: hand-edited files, damaged shards, outputs that cannot be written ------------------

def _records_copy(trained_run, tmp_path):
    """A copy of the records the session's trained run was trained on, for this test to damage."""
    import shutil

    info = json.load(open(os.path.join(trained_run, "segprep.json")))
    shutil.copytree(info["data_dir"], tmp_path / "records")
    return str(tmp_path / "records")


def _edit_json(path, edit):
    with open(path) as f:
        obj = json.load(f)
    edit(obj)
    with open(path, "w") as f:
        json.dump(obj, f)


@pytest.mark.parametrize("edit, key", [
    (lambda m: m.pop("crop_size"), "has no 'crop_size'"),
    (lambda m: m.update(crop_size="abc"), "'crop_size' must be a positive integer, not 'abc'"),
    (lambda m: m.update(class_colors=[[0, 0, 0]]), "21 class names but 1 colours"),
    (lambda m: m["splits"]["val"].update(shards="val.tfrecord"), "split 'val': 'shards' must be a list of shard"),
    (lambda m: m["splits"]["train"].pop("records"), "split 'train' has no 'records'"),
])
def test_a_hand_edited_metadata_json_is_one_line_in_every_reader(trained_run, run_dir, tmp_path, capsys, edit, key):
    from segprep import verify
    from segprep.tools import sheet
    from trainer import evaluate, train

    records = _records_copy(trained_run, tmp_path)
    _edit_json(f"{records}/metadata.json", edit)
    for name, main, argv, status in (
            ("verify", verify.main, [records], 1),
            ("train", train.main, ["--data_dir", records, "--model_dir", str(tmp_path / "r")], 2),
            ("evaluate", evaluate.main, ["--model_dir", run_dir, "--data_dir", records], 2),
            ("inspect", sheet.main, [records, "--output", str(tmp_path / "s.png")], 2)):
        assert main(argv) == status, name
        captured = capsys.readouterr()
        lines = (captured.out + captured.err).strip().splitlines()
        assert len(lines) == (2 if name == "verify" else 1), (name, lines)  # verify: the problem, then its count
        assert f"{records}/metadata.json" in lines[0] and key in lines[0], (name, lines[0])
        assert "Traceback" not in captured.err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("text, key", [
    ("{not json", "is not valid JSON"),
    (None, "'crop_size' must be a positive integer, not '64'"),
    ("[]", "is not a JSON object"),
])
def test_a_damaged_segprep_json_is_one_line_in_predict_and_evaluate(run_dir, tmp_path, capsys, text, key):
    from trainer import evaluate, predict

    path = os.path.join(run_dir, "segprep.json")
    if text is None:
        _edit_json(path, lambda info: info.update(crop_size="64"))
    else:
        open(path, "w").write(text)
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    for main, argv in ((predict.main, ["--model_dir", run_dir, "--input", str(image), "--output_dir",
                                       str(tmp_path / "p")]),
                       (evaluate.main, ["--model_dir", run_dir])):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path}" in err[0] and key in err[0], err
    assert not (tmp_path / "p").exists()


def _damage_a_png_inside(shard):
    """Rewrites the shard with its first record's mask PNG cut short, framed as a valid record (good checksums):
    only decoding finds it."""
    from segprep.formats import tfrecord, records

    entries = [data for _, data in tfrecord.read(shard)]
    features = {k: v for k, (_, v) in records.decode_example(entries[0]).items()}
    features[records.MASK_ENCODED] = [features[records.MASK_ENCODED][0][:40]]
    entries[0] = records.encode_example(features)
    with open(shard, "wb") as f:
        for data in entries:
            tfrecord.write(f, data)


@pytest.mark.parametrize("damage", ["png inside", "truncated"])
def test_a_damaged_shard_names_the_shard_and_record_in_train_and_evaluate(trained_run, run_dir, tmp_path, capsys,
                                                                          damage):
    from trainer import evaluate, train

    records = _records_copy(trained_run, tmp_path)
    meta = json.load(open(f"{records}/metadata.json"))
    for split in ("train", "val"):
        shard = f"{records}/{meta['splits'][split]['shards'][0]}"
        if damage == "png inside":
            _damage_a_png_inside(shard)
        else:
            data = open(shard, "rb").read()
            open(shard, "wb").write(data[:len(data) // 2])
    for name, main, argv, split in (
            ("train", train.main, ["--data_dir", records, "--model_dir", str(tmp_path / "r"), "--epochs", "1",
                                   "--width", "8", "--batch_size", "4"], "train"),
            ("evaluate", evaluate.main, ["--model_dir", run_dir, "--data_dir", records], "val")):
        assert main(argv) == 2, name
        captured = capsys.readouterr()
        err = [line for line in captured.err.strip().splitlines() if line.startswith(f"{name}: error")]
        assert len(err) == 1 and "Traceback" not in captured.err, captured.err
        shard = f"{records}/{meta['splits'][split]['shards'][0]}"
        assert err[0].startswith(f"{name}: error: damaged shard {shard}: "), err[0]
        assert ("record 0: mask:" if damage == "png inside" else "cut short") in err[0], err[0]
