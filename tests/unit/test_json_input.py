"""app/json_input.py: every route's JSON decoder for untrusted input.

Hostile documents (deep nesting, bad UTF-8, truncations) raise ``MalformedJSON`` and nothing
else; every JSON value Smooth could be sent decodes to itself (Hypothesis).
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.json_input import MAX_DEPTH, MALFORMED_JSON, MalformedJSON, loads

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


@pytest.mark.parametrize("document", [
    nested(30_000), b'{"a":' * 30_000 + b"1" + b"}" * 30_000, nested(1_000_000),
    nested(MAX_DEPTH + 1), b'{"a":[' * 20 + b"]}" * 20,
    b"", b"not json", b"\xff\xfe", b'{"a":', b'"\xed\xa0\x80"', b"[1,]", b"NaN]",
])
def test_hostile_documents_are_malformed(document):
    with pytest.raises(MalformedJSON) as caught:
        loads(document)
    assert str(caught.value) == MALFORMED_JSON
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError keep working


def test_nesting_up_to_the_bound_is_accepted_and_brackets_in_strings_do_not_count():
    assert loads(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    text = json.dumps({"content": "[" * 10_000 + "{" * 10_000})
    assert loads(text.encode()) == json.loads(text)
    many_shallow = b"[" + b",".join([b"[1]"] * 5000) + b"]"
    assert len(loads(many_shallow)) == 5000


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_every_json_value_round_trips(value):
    assert loads(json.dumps(value).encode("utf-8")) == value
    assert loads(json.dumps(value, ensure_ascii=False)) == value


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.text(alphabet="[]{}\",:0123456789 ntrufalse\\", max_size=300).map(str.encode))
def test_any_bytes_decode_or_are_malformed_nothing_else(data):
    try:
        loads(data)
    except MalformedJSON:
        pass
