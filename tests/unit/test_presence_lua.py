"""The presence store's Lua scripts and key layout (app/backends/redis_presence.py and
app/backends/presence_lua/), checked without Redis; tests/integration/test_presence_*.py
run them on a real one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.backends import redis_presence
from app.backends.redis_presence import KEY_TEMPLATES, KeyLayout

LUA_DIR = Path(redis_presence.__file__).with_name("presence_lua")


def test_every_script_file_is_loaded_and_every_loaded_script_has_a_file() -> None:
    on_disk = {path.stem for path in LUA_DIR.glob("*.lua")} - {"prelude"}
    assert on_disk == set(redis_presence._SCRIPTS)


def test_no_script_spells_a_key_name() -> None:
    """Key names live in KEY_TEMPLATES only; scripts build them with key()."""
    pieces = {piece for template in KEY_TEMPLATES.values() for piece in template.split("{}")}
    # ':' alone also separates the "{cid}:{vid}" value of the user hash's voice field.
    names = (pieces - {"", ":"}) | {redis_presence.DEFAULT_PREFIX}
    for path in LUA_DIR.glob("*.lua"):
        literals = set(re.findall(r"'([^']*)'", path.read_text()))
        assert not literals & names, f"{path.name} spells {sorted(literals & names)}"


def test_python_and_script_layout_agree() -> None:
    layout = KeyLayout("p:")
    pieces = json.loads(layout.for_scripts)
    assert set(pieces) == set(KEY_TEMPLATES)
    assert layout.key("user_sessions", 5) == "p:user:5:sessions"
    assert layout.key("voice", 3, 12) == "p:voice:3:12"
    assert layout.key("online") == "p:online"
    # What key() in prelude.lua does with the serialized pieces.
    head, *rest = pieces["sync"]
    assert head + "n1" + rest[0] + "s9" + rest[1] == layout.key("sync", "n1", "s9") == "p:sync:n1:s9"


def test_a_prefix_with_braces_is_taken_verbatim() -> None:
    assert KeyLayout("{}:").key("session", "s1") == "{}:session:s1"
