"""The index table asks for nothing twice: every index a write must maintain earns its cost,
except those kept on purpose (``RANGE_INDEXES``)."""

from __future__ import annotations

from app.backends.mongo_schema import INDEXES, RANGE_INDEXES


def _plain(options: dict[str, object]) -> bool:
    """An index whose keys alone say what it serves (not unique, not partial), and not one kept on
    purpose beside a longer one (``RANGE_INDEXES``, which says why)."""
    return not options.get("unique") and "partialFilterExpression" not in options \
        and options["name"] not in RANGE_INDEXES


def test_no_plain_index_is_a_prefix_of_another_on_its_collection() -> None:
    redundant = [
        (collection, options["name"], other_options["name"])
        for collection, keys, options in INDEXES if _plain(options)
        for other_collection, other_keys, other_options in INDEXES
        if other_collection == collection and other_keys != keys and other_keys[:len(keys)] == keys
        and "partialFilterExpression" not in other_options
    ]
    assert redundant == []


def test_index_names_are_unique_per_collection() -> None:
    names = [(collection, options["name"]) for collection, _keys, options in INDEXES]
    assert len(names) == len(set(names))
