"""The house's rules, enforced: who may import whom, no import cycles, registries that agree,
and documentation that names the tree as it is (docs/architecture.md).

Every import is found, including imports inside functions, under ``TYPE_CHECKING`` and through
``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hilctl", "sim", "drivers", "protocols")

#: Packages each package must never import (directly or inside a function).
FORBIDDEN = {
    "hilctl": {"sim", "drivers"},
    "sim": {"drivers"},
    "drivers": {"sim"},
    "protocols": {"hilctl", "sim", "drivers"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


MODULES = project_modules()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{MODULES[self.importer].relative_to(ROOT)}:{self.line} imports {self.target}"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(importer: str) -> Iterator[Import]:
    """Every module ``importer`` imports, at any depth of its code."""
    tree = ast.parse(MODULES[importer].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(importer, node)
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                yield Import(importer, submodule if submodule in MODULES else module, node.lineno)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                             "__import__")):
            yield Import(importer, node.args[0].value, node.lineno)


ALL_IMPORTS = [found for importer in MODULES for found in imports_of(importer)]


def test_every_project_module_is_scanned() -> None:
    assert {"hilctl.cli", "hilctl.backends", "sim.tile", "drivers.bench", "protocols.station"} <= set(MODULES)
    assert len(ALL_IMPORTS) > 200  # the scanner sees the imports (a broken walk finds none)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_breaks_the_layering(package: str) -> None:
    """hilctl imports neither sim nor drivers; sim and drivers never import each other;
    protocols imports none of the three."""
    broken = [str(found) for found in ALL_IMPORTS
              if found.importer.split(".")[0] == package
              and found.target.split(".")[0] in FORBIDDEN[package]]
    assert not broken, "imports that break the layering:\n" + "\n".join(broken)


def test_only_commands_import_the_command_line() -> None:
    """The command line is a layer of its own: only command modules (the core's, and the
    ``cli`` modules other packages register) and ``python -m hilctl`` import it."""
    allowed = {"hilctl.__main__", "sim.cli", "drivers.cli"}
    broken = [str(found) for found in ALL_IMPORTS
              if found.target.startswith("hilctl.cli") and not found.importer.startswith("hilctl.cli")
              and found.importer not in allowed]
    assert not broken, "\n".join(broken)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_circular_imports_between_modules() -> None:
    edges: dict[str, set[str]] = {}
    for found in ALL_IMPORTS:
        if found.target in MODULES:
            edges.setdefault(found.importer, set()).add(found.target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]


def test_core_device_configs_and_emulator_device_models_name_the_same_set() -> None:
    from hilctl.config import DEVICE_CONFIGS
    from sim.devices import DEVICE_MODELS

    assert set(DEVICE_CONFIGS) == set(DEVICE_MODELS)


def test_registries_are_derived_from_their_unions() -> None:
    """Each registry's names are its union's members' own names, in the union's order."""
    from hilctl.algorithms import ALGORITHMS
    from hilctl.tasks import TASKS

    assert all(model.model_fields["name"].default == name for name, model in ALGORITHMS.items())
    assert all(model.model_fields["name"].default == name for name, model in TASKS.items())
    assert list(ALGORITHMS)[:3] == ["digital-sgd", "analog-sgd", "tiki-taka"]


def test_the_registered_backends_and_commands_are_found_by_entry_point() -> None:
    from importlib.metadata import entry_points

    from hilctl.backends import get_backend

    assert {ep.name for ep in entry_points(group="hilctl.backends")} >= {"sim", "lab"}
    assert {ep.name for ep in entry_points(group="hilctl.commands")} >= {"instruments", "sim"}
    assert get_backend("sim").name == "sim" and get_backend("lab").name == "lab"


# ---------------------------------------------------------------------------------------------
# The documentation names the tree as it is.
# ---------------------------------------------------------------------------------------------

ARCHITECTURE = ROOT / "docs" / "architecture.md"
README = ROOT / "README.md"
_PATH = re.compile(r"`((?:hilctl|sim|drivers|protocols|tests|benchmarks|examples|docs)/[\w/.-]*)`")


def _named_paths(text: str) -> set[str]:
    return {match.rstrip("/") for match in _PATH.findall(text)}


def test_architecture_doc_names_every_module() -> None:
    named = _named_paths(ARCHITECTURE.read_text(encoding="utf-8"))
    missing = [str(path.relative_to(ROOT)) for path in MODULES.values()
               if path.name != "__init__.py" and str(path.relative_to(ROOT)) not in named]
    assert not missing, f"docs/architecture.md does not name: {missing}"


@pytest.mark.parametrize("document", [ARCHITECTURE, README], ids=lambda p: p.name)
def test_every_path_the_docs_name_exists(document: Path) -> None:
    absent = sorted(path for path in _named_paths(document.read_text(encoding="utf-8"))
                    if "*" not in path and not (ROOT / path).exists())
    assert not absent, f"{document.name} names paths that do not exist: {absent}"


def test_code_and_tests_cite_only_files_in_the_repository() -> None:
    """No design notes from outside the repository, and no issue numbers."""
    outside = re.compile(r"DESIGN\.md|REFERENCES\.md|STYLE\.md|\bissues?[ -]?#?\d+|\bthe issue'?s?\b",
                         re.IGNORECASE)
    sources = [*MODULES.values(), *sorted((ROOT / "tests").rglob("*.py")),
               *sorted((ROOT / "benchmarks").rglob("*.py"))]
    cited = [f"{path.relative_to(ROOT)}:{number}" for path in sources
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if outside.search(line) and path != Path(__file__)]
    assert not cited, f"citations of files outside the repository or of issues: {cited}"
