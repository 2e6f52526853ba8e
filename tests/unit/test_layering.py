"""The import rules of the architecture, checked on the source with ``ast``.

- The STOMP codec and the presence line codec are pure: stdlib (and app.errors) only.
- Only a backend's own module imports its client library.
- Only app/settings.py (and gunicorn.conf.py) reads the environment.
- The chat backends import, of the chat domain, only its model and ports.
- In the chat domain only ``app.chat.http`` is Flask code.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_MODULES = ["app/stomp/frames.py", "app/stomp/parser.py", "app/stomp/heartbeat.py", "app/tcp_presence/codec.py"]
PURE_ALLOWED = {"app.errors", "__future__"}
CLIENT_LIBRARIES = {
    "kafka": "app/backends/kafka_bus.py",
    "pymongo": "app/backends/mongo_",
    "gridfs": "app/backends/mongo_",
    "bson": "app/backends/mongo_",
    "redis": "app/backends/redis_",
}
STDLIB = __import__("sys").stdlib_module_names


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _source_files() -> list[Path]:
    return [p for top in ("app", "workers") for p in (ROOT / top).rglob("*.py")]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_codecs_import_only_the_stdlib(module):
    path = ROOT / module
    if not path.exists():
        pytest.fail(f"{module} is missing")
    foreign = {name for name in _imports(path)
               if name.split(".")[0] not in STDLIB and name not in PURE_ALLOWED}
    assert not foreign, f"{module} imports {sorted(foreign)}"


def test_client_libraries_are_imported_only_by_their_backend_module():
    offenders = []
    for path in _source_files():
        relative = str(path.relative_to(ROOT))
        for name in _imports(path):
            owner = CLIENT_LIBRARIES.get(name.split(".")[0])
            if owner and not relative.startswith(owner):
                offenders.append(f"{relative} imports {name}")
    assert not offenders, offenders


def test_only_settings_reads_the_environment():
    offenders = []
    for path in _source_files():
        relative = str(path.relative_to(ROOT))
        if relative == "app/settings.py":
            continue
        text = path.read_text()
        if "os.environ" in text or "os.getenv" in text:
            offenders.append(relative)
    assert not offenders, offenders


BACKEND_MAY_IMPORT_FROM_APP = {"app.chat.model", "app.chat.ports", "app.destinations", "app.errors", "app.settings"}
PRESENCE_BACKENDS = {"redis_presence.py"}  # the presence server's store, under the presence package's rules


def test_chat_backends_see_only_the_chat_model_and_ports():
    offenders = []
    for path in sorted((ROOT / "app" / "backends").glob("*.py")):
        if path.name in PRESENCE_BACKENDS:
            continue
        relative = str(path.relative_to(ROOT))
        for name in _imports(path):
            if name.startswith("app.") and not name.startswith("app.backends.") \
                    and name not in BACKEND_MAY_IMPORT_FROM_APP:
                offenders.append(f"{relative} imports {name}")
    assert not offenders, offenders


def test_only_the_chat_http_package_imports_flask_in_the_chat_domain():
    offenders = []
    for path in sorted((ROOT / "app" / "chat").rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        if relative.startswith("app/chat/http/"):
            continue
        offenders += [f"{relative} imports {name}" for name in _imports(path)
                      if name.split(".")[0] in ("flask", "werkzeug") or name.startswith("app.chat.http")]
    assert not offenders, offenders
