"""gs:// input and output through Beam's GCS filesystem, against a local GCS emulator on 127.0.0.1."""

import json
import logging
import os
import socket

import pytest

from conftest import read_records
from pipelines import prepare
from segprep import crops


@pytest.fixture
def gcs(monkeypatch):
    from gcp_storage_emulator.server import create_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="bkt")
    server.start()
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    # Beam looks for Google credentials first (~18 s offline); the emulator wants an anonymous client.
    import apache_beam.internal.gcp.auth as auth

    monkeypatch.setattr(auth, "get_service_credentials", lambda options: None)
    yield "gs://bkt"
    server.stop()


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
    # A second run into the same bucket path refuses, as it does locally.
    with pytest.raises(prepare.UsageError, match="--overwrite"):
        prepare.run(["--input_dir", f"{gcs}/voc", "--output_dir", out, "--runner=DirectRunner"])
