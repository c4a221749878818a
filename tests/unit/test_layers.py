"""Layer rules over the import graph: which parts of taogate may import which.

Imports are read with ``ast``, so every one counts: relative ones, those inside functions and
those under ``TYPE_CHECKING``. A rule is a row of ``RULES``; ``taogate_imports`` is the helper
that finds what a module imports.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def is_module(name: str, src: Path = SRC) -> bool:
    """Whether ``name`` (dotted) is a module or package under ``src``."""
    path = src.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def is_private(name: str) -> bool:
    """A module with a ``_name`` in its path (``taogate._gateway``, ``taogate.testing._fakes``)."""
    return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))


def module_name(path: Path, root: Path) -> str:
    """``root/taogate/http/_app.py`` is ``taogate.http._app``; a package is named by its dir."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str, path: Path) -> str:
    """The package that relative imports in ``module`` start from (itself for an ``__init__``)."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` names, relative levels resolved against ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@functools.cache
def face(package: str, src: Path = SRC) -> Mapping[str, str]:
    """The names a package's ``__init__`` imports at its top, each with the module it names
    (``taogate``'s ``Gateway`` is ``taogate._gateway``), followed through nested faces."""
    init = src.joinpath(*package.split("."), "__init__.py")
    if not init.is_file():
        return {}
    origins: dict[str, str] = {}
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, package)
            for alias in node.names:
                origin = source
                if source != package and is_module(source, src):
                    origin = face(source, src).get(alias.name, source)
                origins[alias.asname or alias.name] = origin
    return origins


def taogate_imports(
    path: Path, module: str, *, src: Path = SRC, through_faces: bool = False
) -> set[str]:
    """The taogate modules that ``module`` (the file at ``path``) imports, anywhere in it.

    ``from p import x`` counts ``p`` and, when ``x`` is a submodule, ``p.x``. With
    ``through_faces``, a name taken from a package's face also counts the module that defines
    it, so ``from taogate import Gateway`` counts ``taogate._gateway``.
    """
    package = package_of(module, path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, package)
            found.add(source)
            for alias in node.names:
                if is_module(f"{source}.{alias.name}", src):
                    found.add(f"{source}.{alias.name}")
                elif through_faces and alias.name in face(source, src):
                    found.add(face(source, src)[alias.name])
    return {name for name in found if name == "taogate" or name.startswith("taogate.")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Modules under ``importers`` import none of ``forbidden`` (nor their submodules) and,
    with ``no_private``, no private module outside their own package."""

    name: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    no_private: bool = False
    through_faces: bool = False

    def applies_to(self, module: str) -> bool:
        return _under(module, self.importers)

    def broken_by(self, imported: str, *, package: str) -> bool:
        """Whether a module of ``package`` breaks the rule by importing ``imported``."""
        if _under(imported, self.forbidden):
            return True
        if not (self.no_private and is_private(imported)):
            return False
        parts = imported.split(".")
        first = next(i for i, p in enumerate(parts) if is_private(p))
        owner = ".".join(parts[:first])  # the package whose private module it is
        return not _under(owner, [package])


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


RULES = (
    Rule(
        name="taogate.testing imports nothing from the gateway, dispatch, the service or http",
        importers=("taogate.testing",),
        forbidden=(
            "taogate._gateway",
            "taogate._dispatch",
            "taogate._assembly",
            "taogate._service",
            "taogate.http",
        ),
        through_faces=True,
    ),
    Rule(
        name="providers import nothing from quota, cache, dispatch, gateway, jobs or http",
        importers=("taogate.providers",),
        forbidden=(
            "taogate.quota",
            "taogate.cache",
            "taogate._dispatch",
            "taogate._gateway",
            "taogate.jobs",
            "taogate.http",
        ),
        through_faces=True,
    ),
    Rule(
        name="providers import nothing from settings (build_provider reads a protocol)",
        importers=("taogate.providers",),
        forbidden=("taogate._settings",),
        through_faces=True,
    ),
    Rule(
        name="quota imports nothing from providers, cache, gateway, jobs or http",
        importers=("taogate.quota",),
        forbidden=(
            "taogate.providers",
            "taogate.cache",
            "taogate._gateway",
            "taogate.jobs",
            "taogate.http",
        ),
        through_faces=True,
    ),
    Rule(
        name="cache imports nothing from providers, dispatch, quota, jobs or http",
        importers=("taogate.cache",),
        forbidden=(
            "taogate.providers",
            "taogate._dispatch",
            "taogate.quota",
            "taogate.jobs",
            "taogate.http",
        ),
        through_faces=True,
    ),
    Rule(
        name="the library imports nothing from http, jobs, testing or the service",
        importers=(
            "taogate._gateway",
            "taogate._dispatch",
            "taogate._assembly",
            "taogate.cache",
            "taogate.quota",
        ),
        forbidden=("taogate.http", "taogate.jobs", "taogate.testing", "taogate._service"),
        through_faces=True,
    ),
    Rule(
        name="the gateway imports nothing of Redis (its parts are built by taogate._assembly)",
        importers=("taogate._gateway",),
        forbidden=(
            "taogate.replicas",
            "taogate.cache.redis",
            "taogate.quota.redis",
            "taogate._redis",
        ),
        through_faces=True,
    ),
    Rule(
        name="replicas import nothing from the gateway, dispatch, the service, jobs or http",
        importers=("taogate.replicas",),
        forbidden=(
            "taogate._gateway",
            "taogate._dispatch",
            "taogate._service",
            "taogate.jobs",
            "taogate.http",
            "taogate.testing",
        ),
        through_faces=True,
    ),
    Rule(
        name="base types import nothing of the parts that use them",
        importers=("taogate._credentials", "taogate._beijing", "taogate._settings"),
        forbidden=(
            "taogate.providers",
            "taogate.quota",
            "taogate.cache",
            "taogate._dispatch",
            "taogate._gateway",
            "taogate.jobs",
            "taogate.http",
        ),
        through_faces=True,
    ),
    Rule(
        name="the metrics library imports nothing from http (metrics without the HTTP service)",
        importers=("taogate.metrics",),
        forbidden=("taogate.http",),
        through_faces=True,
    ),
    Rule(
        name="the HTTP route modules import nothing from the app that builds them",
        importers=(
            "taogate.http._context",
            "taogate.http._edge",
            "taogate.http._items",
            "taogate.http._ops",
            "taogate.http._jobs",
            "taogate.http._console",
            "taogate.http._degrade",
        ),
        forbidden=("taogate.http._app", "taogate.http._serve"),
    ),
    Rule(
        name="benchmarks import no private module of taogate (private code only through a face)",
        importers=("bench", "taogate.bench"),
        no_private=True,
    ),
)


def all_modules() -> dict[str, Path]:
    """Every module of the package (``taogate.…``) and every benchmark script (``bench.…``)."""
    found = {module_name(p, SRC): p for p in sorted((SRC / "taogate").rglob("*.py"))}
    found |= {module_name(p, ROOT): p for p in sorted((ROOT / "bench").glob("*.py"))}
    return found


def violations(rule: Rule, modules: Mapping[str, Path], src: Path = SRC) -> list[str]:
    """``"a imports b"`` for each import that breaks ``rule`` among ``modules`` (name: path)."""
    return sorted(
        f"{module} imports {imported}"
        for module, path in modules.items()
        if rule.applies_to(module)
        for imported in taogate_imports(path, module, src=src, through_faces=rule.through_faces)
        if rule.broken_by(imported, package=package_of(module, path))
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_layer_rule_holds(rule: Rule) -> None:
    modules = all_modules()
    assert any(rule.applies_to(m) for m in modules), "the rule names no module that exists"
    assert violations(rule, modules) == []


def private_reaches(path: Path, src: Path = SRC) -> list[str]:
    """``"line: code"`` for each private name the file at ``path`` takes from another module
    (``from m import _Name``; a private *module* is fine) or reads off an object other than
    ``self`` or ``cls`` (``gw._clock``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [a.name for a in node.names if is_private(a.name)]
            found += [
                f"{node.lineno}: from {node.module} import {name}"
                for name in names
                if not is_module(f"{node.module}.{name}", src)
            ]
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("package", ["taogate.http", "taogate.cli", "taogate.jobs"])
def test_the_edges_use_no_private_name_of_another_module(package: str) -> None:
    """The HTTP service, the command line and the job worker reach the library, and each
    other's modules, through public names only (no ``_Api`` taken back from the app, no
    ``gw._clock()``)."""
    reaches = {
        module: found
        for module, path in all_modules().items()
        if _under(module, [package])
        if (found := private_reaches(path))
    }
    assert reaches == {}


# --- the helper itself, on a tree of its own ---------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    files = {
        "taogate/__init__.py": "from taogate._gateway import Gateway\nfrom ._model import Item\n",
        "taogate/_gateway.py": "",
        "taogate/_model.py": "",
        "taogate/http/__init__.py": "from taogate.http._app import create_app\n",
        "taogate/http/_app.py": "",
        "taogate/testing/__init__.py": "from taogate.testing._fakes import Fake\n",
        "taogate/testing/_fakes.py": (
            "from __future__ import annotations\n"
            "from typing import TYPE_CHECKING\n"
            "from .. import _model\n"
            "from . import _sim\n"
            "from .._model import Item\n"
            "import os\n"
            "if TYPE_CHECKING:\n"
            "    from taogate.http import create_app\n"
            "def later() -> None:\n"
            "    import taogate._gateway as gw\n"
        ),
        "taogate/testing/_sim.py": "from taogate import Gateway, Item\n",
        "taogate/bench/__init__.py": (
            "from taogate.bench._harness import Check\nfrom taogate._model import Item\n"
        ),
        "taogate/bench/_harness.py": "from taogate.testing import Fake\n",
        "taogate/bench/_flood.py": "from taogate.bench import _harness\nfrom taogate import Item\n",
        "bench/run.py": (
            "from taogate.bench._harness import Check\nfrom taogate.testing._fakes import Fake\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_every_kind_of_import_is_found(tree: Path) -> None:
    fakes = tree / "taogate/testing/_fakes.py"
    assert taogate_imports(fakes, "taogate.testing._fakes", src=tree) == {
        "taogate",  # from .. import _model
        "taogate._model",
        "taogate.testing",  # from . import _sim
        "taogate.testing._sim",
        "taogate.http",  # under TYPE_CHECKING
        "taogate._gateway",  # inside a function
    }


def test_names_from_a_face_lead_to_their_module_when_asked(tree: Path) -> None:
    sim = tree / "taogate/testing/_sim.py"
    assert taogate_imports(sim, "taogate.testing._sim", src=tree) == {"taogate"}
    assert taogate_imports(sim, "taogate.testing._sim", src=tree, through_faces=True) == {
        "taogate",
        "taogate._gateway",
        "taogate._model",  # through a relative import in the face
    }


def test_private_reaches_are_found(tmp_path: Path) -> None:
    (tmp_path / "taogate/http").mkdir(parents=True)
    (tmp_path / "taogate/http/_answers.py").write_text("", encoding="utf-8")
    edge = tmp_path / "taogate/http/_edge.py"
    edge.write_text(
        "from taogate.http import _answers\n"  # a private module: fine
        "from taogate.http._app import _Api, create_app\n"
        "class Edge:\n"
        "    def now(self, gw):\n"
        "        return self._clock(), gw._clock(), _answers.Keys\n",
        encoding="utf-8",
    )
    assert private_reaches(edge, src=tmp_path) == [
        "2: from taogate.http._app import _Api",
        "5: gw._clock",
    ]


def test_the_rules_catch_what_they_forbid(tree: Path) -> None:
    modules = {module_name(p, tree): p for p in tree.rglob("*.py")}
    testing, bench = RULES[0], RULES[-1]
    assert violations(testing, modules, src=tree) == [
        "taogate.testing._fakes imports taogate._gateway",
        "taogate.testing._fakes imports taogate.http",
        "taogate.testing._fakes imports taogate.http._app",  # create_app, through the face
        "taogate.testing._sim imports taogate._gateway",
    ]
    # a package's own private modules are its business; another's are not
    assert violations(bench, modules, src=tree) == [
        "bench.run imports taogate.bench._harness",
        "bench.run imports taogate.testing._fakes",
        "taogate.bench imports taogate._model",
    ]
