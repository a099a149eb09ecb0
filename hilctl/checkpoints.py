"""Checkpoint files: a run's whole state as one ``.npz`` file, written atomically.

A state is a tree of dicts and lists whose leaves are numpy arrays or JSON values (numbers,
strings, booleans, None, and the dicts of a ``numpy.random.Generator``'s bit generator state).
The file holds every array under a key of its own and the rest of the tree as JSON
(``__tree__``), arrays replaced by references; loading gives back the same tree, arrays bit for
bit.

Writing is atomic (:func:`write_atomically`): the bytes go to a hidden ``.partial`` file in
the same directory, which is flushed, fsynced and renamed over the final name, then the
directory is fsynced. A kill at any moment leaves either no file or a complete one, and at
worst a ``.partial`` file that :func:`partial_files` finds for the run store to remove.
"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: Version of the file layout.
FORMAT = 1
_TREE = "__tree__"
_ARRAY = "__array__"
_PARTIAL = ".partial"

State = dict[str, Any]


def _split(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``tree`` with every array moved into ``arrays`` and replaced by a reference."""
    if isinstance(tree, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = tree
        return {_ARRAY: key}
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, Mapping):
        return {str(k): _split(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_split(v, arrays) for v in tree]
    return tree


def _join(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY}:
            return arrays[tree[_ARRAY]]
        return {k: _join(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays) for v in tree]
    return tree


def _write_npz(handle: BinaryIO, state: Mapping[str, Any]) -> None:
    arrays: dict[str, np.ndarray] = {}
    tree = _split({"format": FORMAT, "state": state}, arrays)
    payload: dict[str, Any] = {**arrays, _TREE: np.array(json.dumps(tree))}
    np.savez(handle, **payload)


def encode(state: Mapping[str, Any]) -> bytes:
    """``state`` as the bytes of an ``.npz`` file."""
    buffer = io.BytesIO()
    _write_npz(buffer, state)
    return buffer.getvalue()


def decode(data: bytes) -> State:
    """The state of :func:`encode`'s bytes."""
    return load(io.BytesIO(data))


def save(path: Path, state: Mapping[str, Any]) -> int:
    """Write ``state`` to ``path`` atomically (:func:`write_atomically`), streamed to the disk
    without a copy in memory; the file's size in bytes."""
    write_atomically(path, lambda handle: _write_npz(handle, state))
    return path.stat().st_size


def load(path: str | os.PathLike[str] | BinaryIO) -> State:
    """The state saved at ``path`` (or in an open binary file)."""
    with np.load(path, allow_pickle=False) as data:
        tree = json.loads(str(data[_TREE]))
        arrays = {key: data[key] for key in data.files if key != _TREE}
    if tree.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {tree.get('format')!r}, expected {FORMAT}")
    state: State = _join(tree["state"], arrays)
    return state


def write_atomically(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function that writes to a binary file) to ``path`` so that a
    crash leaves the old state or the new one: a hidden partial file, fsynced, renamed over
    ``path``, the directory fsynced."""
    partial = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}{_PARTIAL}")
    try:
        with open(partial, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partial_files(directory: Path) -> list[Path]:
    """The ``.partial`` files under ``directory`` whose writer on this host is gone: what a
    kill in the middle of :func:`write_atomically` left behind."""
    found = []
    host = socket.gethostname()
    for path in directory.rglob(f".*{_PARTIAL}"):
        parts = path.name[: -len(_PARTIAL)].rsplit(".", 2)
        if len(parts) == 3 and parts[1] == host and parts[2].isdigit() and _alive(int(parts[2])):
            continue
        found.append(path)
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A generator's state, JSON-ready (its bit generator's own dict)."""
    return dict(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Put ``rng`` back into ``state`` (from :func:`rng_state`)."""
    rng.bit_generator.state = dict(state)
