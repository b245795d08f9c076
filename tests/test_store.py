"""Run folder: atomic shards, manifests that catch truncation and corruption, input lineage."""

import pandas as pd

from distill.store import RunDir


def test_shard_roundtrip_and_done(tmp_path):
    sdir = RunDir(tmp_path).stage(0, "pairs")
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    entry = sdir.write("part-00000", df, input_sha="abc")
    assert entry["rows"] == 3 and sdir.is_done("part-00000", "abc")
    pd.testing.assert_frame_equal(sdir.read("part-00000"), df)
    assert not sdir.is_done("part-00000", "other-input")  # made from another input: recompute
    assert not sdir.is_done("part-00001")
    assert not list(sdir.path.glob("*.tmp"))


def test_truncated_or_corrupted_shard_is_not_done(tmp_path):
    sdir = RunDir(tmp_path).stage(0, "pairs")
    sdir.write("part-00000", pd.DataFrame({"a": range(100)}))
    p = sdir.shard_path("part-00000")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # truncated
    assert not sdir.is_done("part-00000")
    p.write_bytes(data[:-5] + b"XXXXX")  # same size, corrupted
    assert not sdir.is_done("part-00000")
    p.write_bytes(data)
    assert sdir.is_done("part-00000")


def test_torn_manifest_means_recompute(tmp_path):
    sdir = RunDir(tmp_path).stage(0, "pairs")
    sdir.write("part-00000", pd.DataFrame({"a": [1]}))
    sdir.manifest_path.write_text('{"shards": {"part-0')
    assert not sdir.is_done("part-00000")
