"""The import rules of the architecture, checked on the source with ``ast``.

- No import cycles, between modules or between units. A unit is a package of ``app/``
  (``app.stomp``, ``app.chat``, ``app.chat.http``, ``app.backends``, ``app.tcp_presence``),
  one top-level module (``app.errors``, ``workers.consumers``...), or a composition root.
- Backends import no server, transport or presence-client module: of the rest of Smooth
  only the interfaces they implement (``app.chat.model``/``ports``, ``app.tcp_presence.store``),
  the grammar, errors and settings, and the metrics (a backend times its own calls).
- The STOMP transport (``app.stomp``) imports nothing of the chat domain, of the backends,
  of presence, of the composition root or of the workers.
- The pure codecs (STOMP, presence lines, destinations, the presence store's types) import
  only the standard library and the stdlib-only modules named below.
- Only a backend's own module imports its client library.
- Only app/settings.py (and gunicorn.conf.py) reads the environment.
- In the chat domain only ``app.chat.http`` is Flask code.

Each rule is a function over an import graph, so ``TestTheRulesCatchViolations`` can show
that it fails on a graph that breaks it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = sys.stdlib_module_names
TOPS = ("app", "workers")
PACKAGES = ("app.chat.http", "app.stomp", "app.chat", "app.backends", "app.tcp_presence")
# Composition roots sit above every package they wire, so each is a unit of its own.
COMPOSITION_ROOTS = ("app.composition", "app.tcp_presence.composition", "app.tcp_presence.__main__")

PURE_MODULES = {
    "app.stomp.frames": {"app.errors"},
    "app.stomp.parser": {"app.errors", "app.stomp.frames"},
    "app.stomp.heartbeat": {"app.errors"},
    "app.tcp_presence.codec": {"app.errors"},
    "app.tcp_presence.store": {"app.errors", "app.destinations"},
    "app.destinations": set(),
    "app.errors": set(),
    "app.json_input": set(),
    "app.stomp.ratelimit": set(),
}
CLIENT_LIBRARIES = {
    "kafka": "app/backends/kafka_bus.py",
    "pymongo": "app/backends/mongo_",
    "gridfs": "app/backends/mongo_",
    "bson": "app/backends/mongo_",
    "redis": "app/backends/redis_",
}
BACKEND_MAY_IMPORT = {"app.chat.model", "app.chat.ports", "app.tcp_presence.store", "app.destinations",
                      "app.errors", "app.settings", "app.logs", "app.metrics"}
TRANSPORT_MUST_NOT_IMPORT = ("app.chat", "app.backends", "app.tcp_presence", "app.presence_client",
                             "app.composition", "app.web", "app.wsgi", "workers")

Graph = dict[str, set[str]]


# -- the import graph of the source -----------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every module name ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def source_graph() -> Graph:
    """Module -> the modules of Smooth it imports (``app.*`` and ``workers.*`` only)."""
    paths = {_module_name(p): p for top in TOPS for p in (ROOT / top).rglob("*.py")}
    return {module: {name for name in _imports(path, module) if name in paths and name != module}
            for module, path in paths.items()}


def _all_imports() -> dict[str, tuple[str, set[str]]]:
    """Module -> (its file, every name it imports, third-party ones included)."""
    paths = {_module_name(p): p for top in TOPS for p in (ROOT / top).rglob("*.py")}
    return {module: (str(path.relative_to(ROOT)), _imports(path, module)) for module, path in paths.items()}


# -- the rules ----------------------------------------------------------------------------------


def unit_of(module: str) -> str:
    if module in COMPOSITION_ROOTS:
        return module
    return next((package for package in PACKAGES if module == package or module.startswith(package + ".")), module)


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit_graph(graph: Graph) -> Graph:
    units: Graph = {}
    for module, targets in graph.items():
        units.setdefault(unit_of(module), set()).update(
            unit_of(target) for target in targets if unit_of(target) != unit_of(module))
    return units


def backend_violations(graph: Graph) -> list[str]:
    return [f"{module} imports {target}" for module, targets in sorted(graph.items())
            if unit_of(module) == "app.backends"
            for target in sorted(targets)
            if unit_of(target) != "app.backends" and target not in BACKEND_MAY_IMPORT]


def transport_violations(graph: Graph) -> list[str]:
    return [f"{module} imports {target}" for module, targets in sorted(graph.items())
            if unit_of(module) == "app.stomp"
            for target in sorted(targets)
            if any(target == banned or target.startswith(banned + ".") for banned in TRANSPORT_MUST_NOT_IMPORT)]


def impure_imports(module: str, names: set[str], allowed: set[str]) -> set[str]:
    return {name for name in names
            if name.split(".")[0] not in STDLIB and name != "__future__" and not name.startswith("__future__.")
            and name not in allowed and name.rpartition(".")[0] not in allowed}


# -- the source keeps them ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Graph:
    return source_graph()


def test_no_module_imports_itself_back(graph):
    assert cycles(graph) == []


def test_no_unit_imports_itself_back(graph):
    assert cycles(unit_graph(graph)) == []


def test_backends_import_no_server_transport_or_client(graph):
    assert backend_violations(graph) == []


def test_the_stomp_transport_imports_nothing_of_the_chat_domain(graph):
    assert transport_violations(graph) == []


@pytest.mark.parametrize("module", sorted(PURE_MODULES))
def test_codecs_import_only_the_stdlib(module):
    imports = _all_imports()
    assert module in imports, f"{module} is missing"
    assert impure_imports(module, imports[module][1], PURE_MODULES[module]) == set()


def test_client_libraries_are_imported_only_by_their_backend_module():
    offenders = []
    for relative, names in _all_imports().values():
        for name in names:
            owner = CLIENT_LIBRARIES.get(name.split(".")[0])
            if owner and not relative.startswith(owner):
                offenders.append(f"{relative} imports {name}")
    assert not offenders, offenders


def test_only_settings_reads_the_environment():
    offenders = []
    for relative, _ in _all_imports().values():
        if relative == "app/settings.py":
            continue
        text = (ROOT / relative).read_text()
        if "os.environ" in text or "os.getenv" in text:
            offenders.append(relative)
    assert not offenders, offenders


def test_only_the_chat_http_package_imports_flask_in_the_chat_domain():
    offenders = []
    for module, (relative, names) in _all_imports().items():
        if unit_of(module) != "app.chat":
            continue
        offenders += [f"{relative} imports {name}" for name in names
                      if name.split(".")[0] in ("flask", "werkzeug") or name.startswith("app.chat.http")]
    assert not offenders, offenders


class TestTheRulesCatchViolations:
    """Each rule, given a graph that breaks it, says so."""

    def test_a_module_cycle(self):
        assert cycles({"app.a": {"app.b"}, "app.b": {"app.c"}, "app.c": {"app.a"}}) == [["app.a", "app.b", "app.c"]]

    def test_a_unit_cycle_made_of_acyclic_modules(self):
        graph = {"app.backends.redis_presence": {"app.tcp_presence.handler"},
                 "app.tcp_presence.handler": {"app.tcp_presence.codec"},
                 "app.tcp_presence.server": {"app.backends.redis_presence"}}
        assert cycles(graph) == []
        assert cycles(unit_graph(graph)) == [["app.backends", "app.tcp_presence"]]

    def test_a_backend_that_imports_a_server_or_a_client(self):
        graph = {"app.backends.redis_presence": {"app.tcp_presence.handler", "app.tcp_presence.store"},
                 "app.backends.redis_cache": {"app.presence_client", "app.chat.model"}}
        assert backend_violations(graph) == ["app.backends.redis_cache imports app.presence_client",
                                             "app.backends.redis_presence imports app.tcp_presence.handler"]

    def test_a_transport_that_imports_the_domain(self):
        graph = {"app.stomp.session": {"app.chat.model", "app.contracts", "app.stomp.outbox"}}
        assert transport_violations(graph) == ["app.stomp.session imports app.chat.model"]

    def test_a_codec_that_imports_a_third_party_module(self):
        assert impure_imports("app.stomp.frames", {"re", "gevent", "app.errors", "app.errors.X"},
                              {"app.errors"}) == {"gevent"}
