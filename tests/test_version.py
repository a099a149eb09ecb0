"""The code version a run records (:mod:`hilctl.version`) and the build hook that makes an
installed copy know its commit (``setup.py``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hilctl import __version__
from hilctl.cli import main
from hilctl.runs import run_metadata
from hilctl.version import (
    FROM_BUILD,
    FROM_CHECKOUT,
    FROM_NOWHERE,
    UNKNOWN,
    build_commit,
    code_version,
    describe_checkout,
    git_describe,
    resolve_commit,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_live_checkout_wins_over_the_build() -> None:
    assert resolve_commit(lambda: "abc1234-dirty", lambda: "0000000") == ("abc1234-dirty", FROM_CHECKOUT)


def test_without_a_checkout_the_build_says() -> None:
    assert resolve_commit(lambda: None, lambda: "def5678") == ("def5678", FROM_BUILD)


def test_with_neither_the_commit_is_unknown() -> None:
    assert resolve_commit(lambda: None, lambda: None) == (UNKNOWN, FROM_NOWHERE)
    assert resolve_commit(lambda: "", lambda: "") == (UNKNOWN, FROM_NOWHERE)


def test_build_info_is_read_from_the_module_a_build_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = type(sys)("hilctl._build_info")
    fake.GIT_DESCRIBE = "v0.1-3-gabcdef0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hilctl._build_info", fake)
    assert build_commit() == "v0.1-3-gabcdef0"
    monkeypatch.setitem(sys.modules, "hilctl._build_info", None)  # an import of it fails
    assert build_commit() is None


def test_a_directory_that_is_no_checkout_has_no_describe(tmp_path: Path) -> None:
    assert describe_checkout(tmp_path) is None


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and a checkout")
def test_run_records_and_version_name_the_commit(capsys: pytest.CaptureFixture[str]) -> None:
    assert describe_checkout(ROOT)  # the checkout describes itself
    git_describe.cache_clear()  # asked once per process: others may have committed since
    expected = git_describe()
    assert expected
    meta = run_metadata()
    assert meta["git"] == expected and meta["git_source"] == FROM_CHECKOUT
    assert code_version() == f"{__version__} (git {expected})"
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hilctl {__version__} (git {expected})"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_build_hook_writes_the_commit_into_the_build(tmp_path: Path) -> None:
    """setup.py's build_py, run on a fresh checkout, writes hilctl/_build_info.py into the build
    directory (not the source tree) holding that checkout's describe."""
    source = tmp_path / "src"
    (source / "hilctl").mkdir(parents=True)
    (source / "hilctl" / "__init__.py").write_text("")
    shutil.copy(ROOT / "setup.py", source / "setup.py")
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()

    build = tmp_path / "build"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
                   cwd=source, check=True, capture_output=True)
    written = (build / "hilctl" / "_build_info.py").read_text()
    assert f"GIT_DESCRIBE = {head!r}" in written
    assert not (source / "hilctl" / "_build_info.py").exists()
