"""OUT/.segprep-predictions.jsonl: what `trainer.predict` wrote in an output folder, one JSON object a file

    {"file": "a.png", "input": "/abs/path/a.jpg", "bytes": 1234, "sha256": "..."}

so that a later run knows which files there are its own predictions of which inputs (trainer/prediction_output.py
decides with it what may be replaced). Later lines win.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

MANIFEST = ".segprep-predictions.jsonl"


def digest(data) -> tuple[int, str]:
    """(size, SHA-256 hex) of bytes, or of a binary file object read in 1 MiB pieces."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data), hashlib.sha256(data).hexdigest()
    sha, size = hashlib.sha256(), 0
    while True:
        piece = data.read(1 << 20)
        if not piece:
            return size, sha.hexdigest()
        sha.update(piece)
        size += len(piece)


class ManifestError(ValueError):
    """A manifest line that is not a record of segprep's predictions."""


@dataclasses.dataclass(frozen=True)
class Record:
    file: str  # relative to the output folder
    input: str  # the input it is the prediction of: an absolute local path or a URL
    bytes: int
    sha256: str

    @classmethod
    def of(cls, name: str, source: str, data) -> Record:
        """`data`: the file's bytes, or the file open for binary reading (read in pieces: a 40,000² prediction
        is never in memory whole)."""
        return cls(name, source, *digest(data))

    def matches(self, data) -> bool:
        """Whether `data` (bytes, or an open binary file) is still exactly what was written."""
        return digest(data) == (self.bytes, self.sha256)

    def line(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False) + "\n"


def parse(text: str, where: str) -> dict[str, Record]:
    """The manifest's records by file name; `ManifestError` naming the first line that is not one."""
    records = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = Record(**json.loads(line))
        except (ValueError, TypeError):
            raise ManifestError(f"{where}: line {number} is not a record of segprep's predictions; it was edited or "
                                "is not segprep's: move it away, or choose another --output_dir.") from None
        records[record.file] = record
    return records
