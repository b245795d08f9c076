"""The run folder: sharded Parquet per round and stage, a manifest per stage, atomic writes.

    runs/<name>/
      config.yaml                      the resolved config the run was made with
      round-0/<stage>/part-00000.parquet
      round-0/<stage>/_manifest.json   {"shards": {"part-00000": {"rows", "bytes", "sha256", "input"}}}
      round-0/corpus/<task>/part-*.parquet, round-0/funnel.json

A shard counts as done only when its manifest entry exists and the file on disk has the recorded
size and checksum, and was made from the input shard that is there now. Anything else (a killed
write, a truncated or corrupted file, a recomputed input) is recomputed, never read as data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_parquet(df: pd.DataFrame, path: Path) -> dict:
    """Writes ``df`` atomically (temporary file, then rename); returns its manifest entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"rows": len(df), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_parquet(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


@dataclass
class StageDir:
    """One stage of one round: its shards and its manifest."""

    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / "_manifest.json"

    def shard_path(self, shard: str) -> Path:
        return self.path / f"{shard}.parquet"

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"shards": {}}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError:
            return {"shards": {}}  # a torn manifest is treated as empty: every shard is re-verified/recomputed

    def _save(self, manifest: dict) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))

    def entry(self, shard: str) -> dict | None:
        return self.manifest()["shards"].get(shard)

    def is_done(self, shard: str, input_sha: str | None = None) -> bool:
        """Done = recorded, the file matches the record, and it was made from this input."""
        e = self.entry(shard)
        p = self.shard_path(shard)
        if e is None or not p.exists():
            return False
        if input_sha is not None and e.get("input") != input_sha:
            return False
        return p.stat().st_size == e["bytes"] and sha256_file(p) == e["sha256"]

    def write(self, shard: str, df: pd.DataFrame, input_sha: str | None = None, **extra) -> dict:
        entry = write_parquet(df, self.shard_path(shard))
        entry["input"] = input_sha
        entry.update(extra)
        self.record(shard, entry)
        return entry

    def record(self, shard: str, entry: dict) -> None:
        m = self.manifest()
        m["shards"][shard] = entry
        self._save(m)

    def read(self, shard: str) -> pd.DataFrame:
        return read_parquet(self.shard_path(shard))

    def done_shards(self) -> list[str]:
        return sorted(self.manifest()["shards"])


class RunDir:
    """A run folder (``runs/<name>``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def stage(self, round_: int, stage: str) -> StageDir:
        return StageDir(self.path / f"round-{round_}" / stage)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def rounds(self) -> list[int]:
        return sorted(int(p.name.split("-", 1)[1]) for p in self.path.glob("round-*") if p.is_dir())
