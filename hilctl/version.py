"""Which code a run ran: the package version and the commit it came from.

The commit is, in order: ``git describe --always --dirty --tags`` of the live git checkout the
package runs from (an editable or source install); else the commit the installed copy was built
from, written into ``hilctl/_build_info.py`` at build time by ``setup.py`` (a ``pip install .``
from a clone); else unknown. :func:`resolve_commit` makes that choice from its two sources, so
it can be tested without git or a build.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from hilctl import __version__

#: The commit of a copy neither run from a checkout nor built from one.
UNKNOWN = "unknown"

#: The module a build writes (``setup.py``; not kept in git).
BUILD_INFO_MODULE = "hilctl._build_info"

#: Where the commit came from: a live checkout, a build, or nowhere.
FROM_CHECKOUT = "checkout"
FROM_BUILD = "build"
FROM_NOWHERE = "unknown"


def describe_checkout(root: Path, timeout: float = 2.0) -> str | None:
    """``git describe --always --dirty --tags`` of the work tree whose root is ``root``, or None
    where ``root`` is not one (or git is missing, or slow). Never raises."""
    try:
        git = shutil.which("git")
        if git is None or not (root / ".git").exists():
            return None
        done = subprocess.run(
            [git, "-C", str(root), "describe", "--always", "--dirty", "--tags"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
        )
        text = done.stdout.strip()
        return text if done.returncode == 0 and text else None
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def git_describe() -> str | None:
    """The live checkout's ``git describe``: only asked when the directory holding the
    ``hilctl`` package is a git work tree's root, so an installed copy never reports an
    unrelated repository. Cached for the life of the process."""
    return describe_checkout(Path(__file__).resolve().parent.parent)


def build_commit() -> str | None:
    """The commit recorded when this copy was built (``hilctl/_build_info.py``), or None."""
    try:
        module = importlib.import_module(BUILD_INFO_MODULE)
    except ImportError:
        return None
    commit = getattr(module, "GIT_DESCRIBE", None)
    return commit if isinstance(commit, str) and commit.strip() else None


def resolve_commit(live: Callable[[], str | None] = git_describe,
                   built: Callable[[], str | None] = build_commit) -> tuple[str, str]:
    """``(commit, source)``: the live checkout's describe (source ``checkout``), else the
    build's (``build``), else ``("unknown", "unknown")``."""
    described = live()
    if described:
        return described, FROM_CHECKOUT
    recorded = built()
    if recorded:
        return recorded, FROM_BUILD
    return UNKNOWN, FROM_NOWHERE


def commit() -> str:
    """The commit this code came from (see :func:`resolve_commit`), ``unknown`` if none."""
    return resolve_commit()[0]


def code_version() -> str:
    """``<version> (git <commit>)``, e.g. ``0.1.0 (git 05ddbcc-dirty)``; ``(git unknown)``
    for a copy neither run from nor built from a checkout."""
    return f"{__version__} (git {commit()})"
