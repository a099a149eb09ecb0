"""Backends: where tiles come from, found by name through entry points.

A backend is a :class:`Backend` object registered under the entry-point group
``hilctl.backends`` (``pyproject.toml``: ``sim = "sim.backend:SimBackend"``). It declares the
command-line options it adds (:class:`BackendOption`), validates them, may say the default tile
shape, opens tiles, closes what it holds between tiles, and describes itself for the run record.
The core never imports a backend and never branches on a backend's name: a new backend is a
package with one entry point.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from hilctl.config import TileConfig
from hilctl.errors import BackendError, BenchError
from hilctl.tile import Tile

ENTRY_POINT_GROUP = "hilctl.backends"


@dataclass(frozen=True)
class ChipFacts:
    """What a physical chip's own physics fixes, where a run's device settings do not apply.

    Attributes:
        w_min, w_max: the weights its cells can hold (weight units).
        dw_min: the typical weight change of one pulse (weight units).
    """

    w_min: float
    w_max: float
    dw_min: float


@dataclass(frozen=True)
class BackendOption:
    """A command-line option ``--NAME VALUE`` that a backend adds, passed to
    :meth:`Backend.resolve_options` as ``NAME``.

    Attributes:
        name: the option's name (``station`` gives ``--station``), a keyword of ``open_tile``.
        metavar: what the value looks like in ``--help`` (``FILE.toml``).
        help: what the option does.
        misuse: why the option is refused with another backend, e.g. ``only --backend lab uses
            a station file``.
        one_tile: only commands that open one tile by hand take it (``characterize --tile``);
            a training run places its tiles itself.
    """

    name: str
    metavar: str
    help: str
    misuse: str
    one_tile: bool = False

    @property
    def flag(self) -> str:
        return f"--{self.name.replace('_', '-')}"


class Backend(ABC):
    """One kind of tile: the emulator, a bench, ... Subclasses set :attr:`name` and implement
    :meth:`open_tile`; the rest has defaults for a backend without options."""

    #: The name users give with ``--backend``; the entry point's name.
    name: ClassVar[str]
    #: What the backend is, for the title of its options in ``--help`` (``lab bench``).
    title: ClassVar[str] = ""
    #: The command-line options the backend adds.
    options: ClassVar[tuple[BackendOption, ...]] = ()
    #: True where the tiles are a chip's own cells (a bench, or a simulated bench): their device
    #: and read periphery are the chip's, so a run's device and periphery settings do not apply
    #: and are refused; :meth:`chip` says what the chip fixes instead.
    physical: ClassVar[bool] = False
    #: Where a physical backend's chip is described, for messages (``the station file``).
    chip_source: ClassVar[str] = ""

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword options of :meth:`open_tile` from the values of :attr:`options` given on
        the command line (None where one was not given), checked before any tile opens.

        Raises :class:`~hilctl.errors.ConfigError` (the input was refused) naming the option.
        """
        return {}

    def tile_shape(self, options: Mapping[str, Any]) -> tuple[int, int] | None:
        """``(rows, cols)`` of a tile when the user names none (a bench's tile region), or None
        for the command's own default."""
        return None

    @abstractmethod
    def open_tile(self, config: TileConfig, **options: Any) -> Tile:
        """One tile of ``config``; ``options`` as :meth:`resolve_options` returned them."""

    def close(self) -> None:  # noqa: B027 (optional to override: most backends hold nothing)
        """Release what the backend keeps between tiles (instrument connections); the next
        tile opens afresh. Safe to call more than once."""

    def chip(self, options: Mapping[str, Any]) -> ChipFacts | None:
        """A physical backend's weight range and pulse size; None where the run's device
        settings describe the tiles (an emulator)."""
        return None

    def resume_options(self, recorded: Mapping[str, Any],
                       report: Mapping[str, Any]) -> dict[str, Any]:
        """The options to resume a run with, from what it recorded at its start (:meth:`describe`)
        and at its end (:meth:`report`); a backend that must find the same hardware again
        checks it here (``ConfigError`` naming what differs)."""
        return self.resolve_options(recorded)

    def describe(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """What a run records about the backend at its start: here, its options as text."""
        return {key: str(value) for key, value in options.items()}

    def report(self) -> dict[str, Any]:
        """What a run records about the backend at its end (instruments, regions, link
        trouble), JSON-ready; empty where there is nothing to say. A backend whose tiles drive
        instruments puts its running totals of instrument work under ``operations``
        (:mod:`hilctl.operations`); the controller reports a run's share of them."""
        return {}

    def report_lines(self, report: Mapping[str, Any]) -> list[str]:
        """A :meth:`report` for a person, a line each (for summaries); none by default."""
        return []

    def label(self, options: Mapping[str, Any]) -> str:
        """The backend in a summary line: its name, and its options if any."""
        given = ", ".join(f"{key} {value}" for key, value in options.items())
        return f"{self.name} ({given})" if given else self.name

    def tile_label(self, tile: Tile, config: TileConfig, options: Mapping[str, Any]) -> str:
        """Where a measured tile's cells are, for a summary line: by default its device model
        on this backend."""
        return f"{config.device.model} on {self.name}"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        """Close; a failure to close after another failure names both (the bench's state is
        the news a person must not miss)."""
        try:
            self.close()
        except BenchError as closing:
            if exc is None:
                raise
            raise BenchError(f"{_first_line(exc)}; then, closing the backend: {closing}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(_registered())


def get_backend(name: str) -> Backend:
    """A new :class:`Backend` of the one registered as ``name``; ``BackendError`` lists the
    registered names if there is none."""
    registered = _registered()
    if name not in registered:
        allowed = ", ".join(sorted(registered)) or (
            "none (no backend is registered: install hilctl, e.g. pip install -e .)")
        raise BackendError(f"--backend: unknown backend {name!r}; allowed: {allowed}")
    try:
        kind = registered[name].load()
    except ImportError as exc:
        raise BackendError(f"backend {name!r} could not be loaded: {exc}") from exc
    backend = kind()
    if not isinstance(backend, Backend):
        raise BackendError(f"backend {name!r}: entry point {registered[name].value} is not a "
                           "hilctl.backends.Backend")
    return backend


def open_tile(backend: str, config: TileConfig, **options: Any) -> Tile:
    """One tile of ``config`` on the backend called ``backend`` (a new backend object; for
    a bench, whose connections stay open, use :func:`get_backend` and close it)."""
    return get_backend(backend).open_tile(config, **options)
