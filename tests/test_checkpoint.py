"""Checkpoints: plain-NumPy readable round trip, atomic writes, and every load error."""

import json
import os
import zipfile

import numpy as np
import pytest

from tinyalex import checkpoint as ckpt
from tinyalex.checkpoint import FORMAT_VERSION, atomic_write, load_checkpoint, save_checkpoint
from tinyalex.errors import CheckpointError


def _example(seed=0):
    rng = np.random.default_rng(seed)
    params = {"conv1.w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "conv1.b": rng.standard_normal(4).astype(np.float32),
              "fc8.w": rng.standard_normal((10, 8)).astype(np.float32)}
    optimizer = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    arrays = {"mean": np.array([0.49, 0.48, 0.45], np.float32),
              "rng/train": np.arange(6, dtype=np.uint64)}
    meta = {"model": "tiny", "epoch": 3, "step": 17, "classes": ["cat", "dog"],
            "metrics": [{"epoch": 1, "val_acc": float("nan")}, {"epoch": 2, "val_acc": 0.5}],
            "schedule": {"name": "onecycle", "peak": 0.05}, "best": np.float32(0.5)}
    return params, optimizer, arrays, meta


def _save(path, seed=0):
    params, optimizer, arrays, meta = _example(seed)
    save_checkpoint(path, params=params, optimizer=optimizer, arrays=arrays, meta=meta)


def test_round_trip(tmp_path):
    path = tmp_path / "last.npz"
    params, optimizer, arrays, meta = _example()
    save_checkpoint(path, params=params, optimizer=optimizer, arrays=arrays, meta=meta)
    c = load_checkpoint(path, model_name="tiny")
    assert set(c.params) == set(params) and set(c.optimizer) == set(optimizer)
    for name in params:
        np.testing.assert_array_equal(c.params[name], params[name])
        assert c.params[name].dtype == np.float32
        np.testing.assert_array_equal(c.optimizer[name], optimizer[name])
    np.testing.assert_array_equal(c.arrays["rng/train"], arrays["rng/train"])
    assert c.arrays["rng/train"].dtype == np.uint64
    assert c.meta["epoch"] == 3 and c.meta["classes"] == ["cat", "dog"]
    assert c.meta["best"] == pytest.approx(0.5)
    assert np.isnan(c.meta["metrics"][0]["val_acc"])
    assert c.meta["format_version"] == FORMAT_VERSION and "tinyalex_version" in c.meta
    assert "format_version" not in meta          # the caller's dict is left alone


def test_readable_with_plain_numpy_without_pickle(tmp_path):
    path = tmp_path / "last.npz"
    _save(path)
    with np.load(path, allow_pickle=False) as z:
        assert "param/conv1.w" in z.files and "optim/fc8.w" in z.files and "array/mean" in z.files
        assert z["param/conv1.w"].shape == (4, 3, 3, 3)
        assert z["meta"].shape == () and z["meta"].dtype.kind == "U"
        assert json.loads(z["meta"].item())["model"] == "tiny"


def test_save_replaces_old_checkpoint_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "last.npz"
    _save(path, seed=0)
    _save(path, seed=1)
    assert os.listdir(tmp_path) == ["last.npz"]
    np.testing.assert_array_equal(load_checkpoint(path).params["fc8.w"], _example(1)[0]["fc8.w"])


@pytest.mark.parametrize("where", ["savez", "replace"])
def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch, where):
    path = tmp_path / "last.npz"
    _save(path, seed=0)
    before = path.read_bytes()

    def half_write_then_fail(f, **entries):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    def failing_replace(src, dst):
        raise OSError(5, "Input/output error")

    if where == "savez":
        monkeypatch.setattr(ckpt.np, "savez", half_write_then_fail)
    else:
        monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        _save(path, seed=1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.npz"]
    np.testing.assert_array_equal(load_checkpoint(path).params["fc8.w"], _example(0)[0]["fc8.w"])


def test_interrupt_mid_write_keeps_old_file_and_propagates(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    _save(path)
    before = path.read_bytes()

    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.npz"]


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        save_checkpoint(tmp_path / "x.npz", params={"a": np.array([{}], dtype=object)},
                        optimizer={}, arrays={}, meta={})
    assert os.listdir(tmp_path) == []


# --- load errors: each one a CheckpointError with a one-line message -------------------------

def _load_error(path, **kwargs):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _write_npz(path, **entries):
    np.savez(path, **entries)


def test_missing_file(tmp_path):
    assert "not found" in _load_error(tmp_path / "nope.npz")


def test_directory(tmp_path):
    assert "directory" in _load_error(tmp_path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is a text file\n" * 10)
    assert "not an .npz" in _load_error(path)
    np.save(tmp_path / "array.npy", np.zeros(3))                 # a lone .npy is not enough
    assert "not an .npz" in _load_error(tmp_path / "array.npy")


def test_truncated(tmp_path):
    path = tmp_path / "last.npz"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not an .npz" in _load_error(path)


def test_corrupt_member(tmp_path):
    path = tmp_path / "last.npz"
    _save(path)
    data = bytearray(path.read_bytes())
    # Flip bytes inside the first stored array's data: the zip directory is intact but the
    # CRC check fails when the member is read.
    with zipfile.ZipFile(path) as z:
        info = z.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 200
    data[start:start + 16] = bytes(16)
    path.write_bytes(bytes(data))
    assert "corrupt" in _load_error(path)


def test_missing_meta(tmp_path):
    path = tmp_path / "x.npz"
    _write_npz(path, **{"param/a": np.zeros(2)})
    assert "no 'meta'" in _load_error(path)


def test_unreadable_meta(tmp_path):
    path = tmp_path / "x.npz"
    _write_npz(path, **{"param/a": np.zeros(2), "meta": np.array("{not json")})
    assert "unreadable meta" in _load_error(path)
    _write_npz(path, **{"param/a": np.zeros(2), "meta": np.array("[1, 2]")})
    assert "not a JSON object" in _load_error(path)


def test_other_format_version(tmp_path):
    path = tmp_path / "x.npz"
    meta = json.dumps({"format_version": FORMAT_VERSION + 1, "model": "tiny"})
    _write_npz(path, **{"param/a": np.zeros(2), "meta": np.array(meta)})
    assert "format version 2" in _load_error(path)
    _write_npz(path, **{"param/a": np.zeros(2), "meta": np.array("{}")})
    assert "format version None" in _load_error(path)


def test_other_model(tmp_path):
    path = tmp_path / "last.npz"
    _save(path)
    assert "holds model 'tiny', not 'paper'" in _load_error(path, model_name="paper")
    assert load_checkpoint(path, model_name="tiny").meta["model"] == "tiny"


def test_missing_or_unexpected_keys(tmp_path):
    path = tmp_path / "x.npz"
    meta = np.array(json.dumps({"format_version": FORMAT_VERSION}))
    _write_npz(path, meta=meta)
    assert "no parameters" in _load_error(path)
    _write_npz(path, meta=meta, **{"param/a": np.zeros(2), "param/b": np.zeros(3),
                                   "optim/a": np.zeros(2)})
    assert "missing ['b']" in _load_error(path)
    _write_npz(path, meta=meta, **{"param/a": np.zeros(2), "optim/a": np.zeros(3)})
    assert "shape" in _load_error(path)
    _write_npz(path, meta=meta, **{"param/a": np.zeros(2), "weights": np.zeros(2)})
    assert "unexpected entry 'weights'" in _load_error(path)
