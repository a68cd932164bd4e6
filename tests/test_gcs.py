"""gs:// end to end against a local GCS emulator on 127.0.0.1: prepare through Beam's GCS filesystem, and the
trainer, predict and evaluate through TensorFlow's (reached through the TLS proxy of tests/gcs_proxy.py)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

import gcs_proxy
from conftest import REPO, read_records
from pipelines import prepare
from segprep import codec, crops, geo


def _resumable_incomplete(response, storage, upload_id, fallback_end=0):
    """The emulator's answer to a resumable upload that is not complete, as GCS gives it: "Range: bytes=0-N" only
    when bytes were received. (The emulator says bytes=0-0 when none were, so a client that asks after a failed
    chunk, as TensorFlow's does, resumes at byte 1 and is refused.)"""
    from gcp_storage_emulator.handlers.objects import GoogleHTTPStatus

    response.status = GoogleHTTPStatus.RESUME_INCOMPLETE
    received = storage.get_resumable_byte_count(upload_id)
    if received > 0:
        response["Range"] = f"bytes=0-{received - 1}"


@pytest.fixture
def emulator(monkeypatch):
    """A GCS emulator on 127.0.0.1 with bucket "bkt", Beam's GCS client pointed at it; → its port."""
    from gcp_storage_emulator.handlers import objects as emulator_objects
    from gcp_storage_emulator.server import create_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    monkeypatch.setattr(emulator_objects, "_resumable_incomplete", _resumable_incomplete)
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="bkt")
    server.start()
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    # Beam looks for Google credentials first (~18 s offline); the emulator wants an anonymous client.
    import apache_beam.internal.gcp.auth as auth

    monkeypatch.setattr(auth, "get_service_credentials", lambda options: None)
    yield port
    server.stop()


@pytest.fixture
def gcs(emulator):
    return "gs://bkt"


@pytest.fixture
def tf_proxy(emulator, tmp_path):
    """The TLS proxy through which TensorFlow's gs:// reaches the emulator, injecting 10% faults; its `env` is the
    environment for a TensorFlow process."""
    proxy = gcs_proxy.Proxy(emulator, str(tmp_path), gcs_proxy.Faults(0.1, seed=5))
    # TensorFlow's client still retries every fault, after 0.1 s at first instead of its 1 s (2 s at most, not 32).
    proxy.env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", GCS_RETRY_CONFIG_INIT_DELAY_TIME_US="100000",
                     GCS_RETRY_CONFIG_MAX_DELAY_TIME_US="2000000", **proxy.tf_env())
    yield proxy
    proxy.close()


def upload(local_root, url):
    from apache_beam.io.filesystems import FileSystems

    for dirpath, _, names in os.walk(local_root):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), local_root)
            with open(os.path.join(dirpath, name), "rb") as src, FileSystems.create(f"{url}/{rel}") as dst:
                dst.write(src.read())


def test_prepare_reads_and_writes_gcs(gcs, voc_tree, tmp_path):
    from apache_beam.io.filesystems import FileSystems

    upload(voc_tree.root, f"{gcs}/voc")
    out = f"{gcs}/records"
    assert prepare.run(["--input_dir", f"{gcs}/voc", "--output_dir", out, "--crop_size", "64",
                        "--crops_per_image", "2", "--num_shards", "8", "--runner=DirectRunner"]) == 0
    meta = json.loads(FileSystems.open(f"{out}/metadata.json").read())
    assert 0 in meta["splits"]["train"]["shard_records"]  # 6 crops in 8 shards: empty ones are written too
    local = tmp_path / "shards"
    local.mkdir()
    for name in meta["splits"]["train"]["shards"]:
        (local / name).write_bytes(FileSystems.open(f"{out}/{name}").read())
    records = read_records(sorted(str(p) for p in local.iterdir()))
    assert len(records) == 6 == meta["splits"]["train"]["records"]
    for r in records:
        sid = r["image/source_id"].decode()
        y, x = r["image/crop/offset"]
        assert (r["mask"] == crops.cut(voc_tree.classes[sid], crops.CropBox(y, x, 64, 64), 255)).all()
    listed = [m.path for m in FileSystems.match([f"{out}/**"])[0].metadata_list]
    assert not [p for p in listed if ".segprep-tmp-" in p]  # temp files moved or removed
    # The dataset tools read gs:// too.
    from segprep import scan, verify

    assert verify.main([out]) == 0 and verify.main([out, "--quick"]) == 0
    assert scan.main(["--input_dir", f"{gcs}/voc", "--write_palette", f"{gcs}/palette.json"]) == 0
    assert json.loads(FileSystems.open(f"{gcs}/palette.json").read())["names"][1] == "aeroplane"
    # A second run into the same bucket path refuses, as it does locally.
    with pytest.raises(prepare.UsageError, match="--overwrite"):
        prepare.run(["--input_dir", f"{gcs}/voc", "--output_dir", out, "--runner=DirectRunner"])


def _shard_bytes(out: str, meta: dict) -> dict:
    from apache_beam.io.filesystems import FileSystems

    return {name: FileSystems.open(f"{out}/{name}").read()
            for split in meta["splits"].values() for name in split["shards"]}


def _prepare_through(emulator, monkeypatch, faults, local_root, url, out, args):
    """Uploads `local_root` to `url` and runs prepare from there into `out`, Beam's GCS client going through
    `faults`; → (metadata, {shard name: bytes})."""
    from apache_beam.io.filesystems import FileSystems

    forwarder = gcs_proxy.Forwarder(emulator, faults)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", forwarder.url)
    try:
        upload(local_root, url)
        assert prepare.run(["--input_dir", url, "--output_dir", out] + args) == 0
        meta = json.loads(FileSystems.open(f"{out}/metadata.json").read())
        return meta, _shard_bytes(out, meta)
    finally:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{emulator}")
        forwarder.close()


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_prepare_through_a_faulty_gcs_writes_the_shards_of_a_clean_run(rate, emulator, voc_tree, tmp_path, monkeypatch):
    """Beam's GCS client under injected faults (10% or 30% of requests: 503, 429, connection reset before the
    request or halfway through a download): it retries, and the shards are byte for byte those of a local run."""
    args = ["--crop_size", "64", "--crops_per_image", "3", "--num_shards", "3", "--runner=DirectRunner"]
    local = str(tmp_path / "local")
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", local] + args) == 0
    want = json.load(open(f"{local}/metadata.json"))
    faults = gcs_proxy.Faults(rate, seed=3)
    out = "gs://bkt/records"
    meta, got = _prepare_through(emulator, monkeypatch, faults, voc_tree.root, "gs://bkt/voc", out, args)
    assert got == _shard_bytes(local, want) and len(got) == 6
    assert meta["splits"] == want["splits"]
    assert not [p for p in _objects(out) if ".segprep-tmp-" in p]
    print("faults injected:", faults.injected, "of", faults.requests, "requests")
    assert sum(faults.injected.values()) >= rate / 2 * faults.requests and all(faults.injected.values())


def _objects(prefix):
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path[len(prefix) + 1:] for m in FileSystems.match([f"{prefix}/**"])[0].metadata_list)


KILLED_RUN = """
import os, signal, sys
import keras
from trainer import train, training
from trainer.model import build_model


class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):  # after the epoch's backup is written
        os.kill(os.getpid(), signal.SIGKILL)


training.fit(build_model(21, 64, width=8), sys.argv[1], sys.argv[2], train.TrainConfig(epochs=2, batch_size=4),
          verbose=0, extra_callbacks=[Kill()])
"""


def test_train_predict_and_evaluate_with_shards_and_run_dir_on_gcs(gcs, tf_proxy, voc_tree, tmp_path):
    """The trainer's commands on gs:// through 10% injected faults (TensorFlow's client retries them): a run
    SIGKILLed after its first epoch resumes and finishes; predict and evaluate read the run from gs://."""
    data, run = f"{gcs}/records", f"{gcs}/runs/a"
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", data, "--crop_size", "64",
                        "--crops_per_image", "6", "--runner=DirectRunner"]) == 0

    def cli(*args, code=None):
        argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", *args]
        return subprocess.run(argv, env=tf_proxy.env, capture_output=True, text=True, timeout=600, cwd=tmp_path)

    killed = cli(data, run, code=KILLED_RUN)  # dies after its first epoch, leaving backup/ on gs://
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert any(name.startswith("backup/") for name in _objects(run))
    trained = cli("trainer.train", "--data_dir", data, "--model_dir", run, "--epochs", "2", "--batch_size", "4",
                  "--width", "8")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "train: resuming from epoch 2 of 2" in trained.stdout and "best val mIoU (main)" in trained.stdout
    names = _objects(run)
    for name in ("model.keras", "best.keras", "log.csv", "segprep.json", "serving/saved_model.pb"):
        assert name in names, names
    assert any(n.startswith("tensorboard/train/") for n in names) and not any(n.startswith("backup/") for n in names)
    from apache_beam.io.filesystems import FileSystems

    log = FileSystems.open(f"{run}/log.csv").read().decode().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1"]  # epoch 0 before the kill, epoch 1 after

    image = tmp_path / "photo.png"
    image.write_bytes(codec.encode_image(voc_tree.images["t1"], "png"))
    predicted = cli("trainer.predict", "--model_dir", run, "--input", str(image), "--output_dir", f"{gcs}/preds")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    mask, _ = codec.decode_mask(FileSystems.open(f"{gcs}/preds/photo.png").read())
    assert mask.shape == voc_tree.images["t1"].shape
    evaluated = cli("trainer.evaluate", "--model_dir", run)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "mIoU" in evaluated.stdout and "eval-val.json" in _objects(run)
    print("faults injected:", tf_proxy.faults.injected, "of", tf_proxy.faults.requests, "requests")
    assert all(tf_proxy.faults.injected.values())


def test_a_pattern_layout_on_gcs_is_listed_once_a_pattern_and_prepared(gcs, tmp_path, monkeypatch):
    import archives
    from apache_beam.io.filesystems import FileSystems

    from segprep import pairs

    a = archives.cityscapes(str(tmp_path / "cityscapes"))
    upload(a.root, f"{gcs}/cityscapes")
    listings = []
    real = pairs.storage.match
    monkeypatch.setattr(pairs.storage, "match", lambda pattern: (listings.append(pattern), real(pattern))[1])
    out = f"{gcs}/records"
    assert prepare.run(["--input_dir", f"{gcs}/cityscapes", "--output_dir", out, "--palette", "cityscapes",
                        "--images", "leftImg8bit/{split}/*/{id}_leftImg8bit.png",
                        "--masks", "gtFine/{split}/*/{id}_gtFine_labelIds.png", "--splits", "train,val",
                        "--crop_size", "64", "--crops_per_image", "2", "--runner=DirectRunner"]) == 0
    inputs = [p for p in listings if p.startswith(f"{gcs}/cityscapes/")]
    assert inputs == [f"{gcs}/cityscapes/gtFine/*/*/*_gtFine_labelIds.png",
                      f"{gcs}/cityscapes/leftImg8bit/*/*/*_leftImg8bit.png"]  # one listing of each prefix
    meta = json.loads(FileSystems.open(f"{out}/metadata.json").read())
    assert meta["splits"]["train"]["images_used"] == 4 and meta["splits"]["val"]["images_used"] == 2
    assert meta["splits"]["train"]["records"] == 8
    assert not [p for p in _objects(out) if ".segprep-tmp-" in p]  # the pairs file went with the temp dir


def test_a_remote_store_that_cannot_be_asked_is_one_line_not_empty(gcs, tmp_path, capsys):
    """A bucket that does not exist (as one without permission does) is not an empty dataset, and not a missing
    earlier run: the listing fails, and the command ends with one line naming the path and the cause."""
    from segprep import scan

    out = str(tmp_path / "out")
    for argv in (["--input_dir", "gs://no-such-bucket/voc", "--output_dir", out, "--runner=DirectRunner"],
                 ["--input_dir", "gs://no-such-bucket/cs", "--output_dir", out, "--val_fraction", "0.1",
                  "--images", "img/{id}.png", "--masks", "lab/{id}.png", "--runner=DirectRunner"],
                 ["--output_dir", "gs://no-such-bucket/records", "--runner=DirectRunner"]):
        capsys.readouterr()
        assert prepare.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("prepare: error: cannot ") and "gs://no-such-bucket/" in err[0], err
    assert not os.path.exists(out)
    assert scan.main(["--input_dir", "gs://no-such-bucket/voc"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scan: error: cannot list gs://no-such-bucket/voc/"), err


def test_a_giant_tiff_on_gcs_is_read_window_by_window_through_faults(emulator, tmp_path, monkeypatch):
    """Tiled GeoTIFF pairs on gs://, through 10% injected faults: each window opens the files in the bucket and
    seeks to its segments there, the grids are read from the bucket's headers, and the shards are byte for byte
    those of a local run. --max_pixels is below the
    tiles' size: decoded whole, they would be refused."""
    from tiffs import pattern_classes, pattern_image, write_tiff

    root = tmp_path / "tiles"
    for split, side in (("train", 0), ("val", 7)):
        for folder, fn in (("images", pattern_image), ("masks", pattern_classes)):
            (root / folder / split).mkdir(parents=True)
            write_tiff(str(root / folder / split / "t.tif"), lambda y, x, fn=fn: fn(y + side, x), 700, 950, tile=64)
            # georeferenced: the grid is read from the bucket too (through the faults), into every record
            geo.stamp(str(root / folder / split / "t.tif"),
                      geo.Grid("EPSG:32632", (412345.678901, 0.3, 0.0, 5823456.789012 - side, 0.0, -0.3)))
    args = ["--images", "images/{split}/{id}.tif", "--masks", "masks/{split}/{id}.tif", "--window_size", "256",
            "--max_pixels", "100000", "--crop_size", "64", "--crops_per_image", "20", "--num_shards", "2",
            "--runner=DirectRunner"]
    local = str(tmp_path / "local")
    assert prepare.run(["--input_dir", str(root), "--output_dir", local] + args) == 0
    want = json.load(open(f"{local}/metadata.json"))
    faults = gcs_proxy.Faults(0.1, seed=4)
    meta, got = _prepare_through(emulator, monkeypatch, faults, str(root), "gs://bkt/tiles", "gs://bkt/records", args)
    assert got == _shard_bytes(local, want) and len(got) == 4
    assert meta["splits"]["train"]["records"] == 20 and meta["splits"]["val"]["records"] == 11 * 15
    assert meta["splits"]["val"]["georeferencing"]["t"]["crs"] == "EPSG:32632"
    print("faults injected:", faults.injected, "of", faults.requests, "requests")
    assert sum(faults.injected.values()) > 0


@pytest.fixture
def preconditions(emulator, monkeypatch):
    """The emulator honours an upload's ifGenerationMatch as GCS does (it ignores it otherwise): the condition the
    gs:// run lock is made of."""
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    real = objects.insert

    def insert(request, response, storage, *args, **kwargs):
        match = request.query.get("ifGenerationMatch")
        if match:
            name = request.data["meta"].get("name") if request.query.get("uploadType") == ["multipart"] else None
            name = request.query.get("name", [name])[0]
            try:
                current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
            except NotFound:
                current = "0"
            if current != match[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "conditionNotMet"}})
                return
        return real(request, response, storage, *args, **kwargs)

    monkeypatch.setattr(objects, "insert", insert)
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is real:
                monkeypatch.setitem(handlers, method, insert)


def test_one_run_at_a_time_in_a_gcs_dir_and_a_dead_runs_lock_is_taken_over(gcs, preconditions, voc_tree):
    import time

    from apache_beam.io.filesystems import FileSystems
    from segprep import runlock

    out = f"{gcs}/records"
    lock = f"{out}/{runlock.LOCK_NAME}"
    with runlock.hold(out, "python -m pipelines.prepare"):
        assert json.loads(FileSystems.open(lock).read())["pid"] == os.getpid()
        with pytest.raises(runlock.FolderError, match=f"{out} is being written by `python -m pipelines.prepare` "
                                                      f"\\(pid {os.getpid()} on "):
            with runlock.hold(out, "python -m trainer.train"):
                pass
        with pytest.raises(prepare.UsageError, match="is being written by"):
            prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--runner=DirectRunner"])
    assert not FileSystems.exists(lock)  # released
    # A lock whose holder stopped beating long ago belongs to a run that died: taken over.
    dead = time.time() - runlock.STALE - 60
    with FileSystems.create(lock) as f:
        f.write(json.dumps({"command": "killed", "pid": 1, "host": "gone", "started": dead, "beat": dead}).encode())
    with runlock.hold(out, "python -m pipelines.prepare"):
        assert json.loads(FileSystems.open(lock).read())["command"] == "python -m pipelines.prepare"
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--crop_size", "64",
                        "--runner=DirectRunner"]) == 0


_COUNT_ARRAY_RECORDS = """
import sys
from trainer import data
ds = data.make_dataset(sys.argv[1], "train", 4, training=False)
steps = data.steps(data.load_metadata(sys.argv[1]), "train", 4)
print(sum(int(x["image"].shape[0]) for x, _ in ds.take(steps)))
"""


def test_array_record_shards_on_gcs_are_written_verified_and_read_by_the_trainer(gcs, tf_proxy, voc_tree, tmp_path):
    """ArrayRecord writes local files only: each shard goes up from a local temp file, and readers take a local
    copy; the records are those of a local run."""
    from apache_beam.io.filesystems import FileSystems
    from segprep import verify
    from segprep.formats import shards

    out, local = f"{gcs}/ar", str(tmp_path / "ar")
    flags = ["--input_dir", voc_tree.root, "--crop_size", "64", "--crops_per_image", "3", "--num_shards", "2",
             "--file_format", "array_record", "--runner=DirectRunner"]
    assert prepare.run([*flags, "--output_dir", out]) == 0 and prepare.run([*flags, "--output_dir", local]) == 0
    meta = json.loads(FileSystems.open(f"{out}/metadata.json").read())
    for split, entry in meta["splits"].items():
        for name in entry["shards"]:
            assert name.endswith(".array_record")
            assert [d for _, d in shards.read(f"{out}/{name}")] == [d for _, d in shards.read(f"{local}/{name}")]
    assert verify.main([out]) == 0
    counted = subprocess.run([sys.executable, "-c", _COUNT_ARRAY_RECORDS, out], env=tf_proxy.env, capture_output=True,
                             text=True, timeout=600, cwd=tmp_path)
    assert counted.returncode == 0, counted.stderr[-3000:]
    assert int(counted.stdout.strip().splitlines()[-1]) == meta["splits"]["train"]["records"]
