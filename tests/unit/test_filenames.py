"""The upload file-name sanitiser (issue 14 item 7): what a stored or echoed name may hold."""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.chat.http.files import MAX_FILENAME_CHARS, _download_headers, sanitize_filename
from app.chat.model import StoredFile

INVISIBLE = {"Cc", "Cf", "Cs"}


@pytest.mark.parametrize("raw, clean", [
    ("\u202egnp.exe", "gnp.exe"),                 # right-to-left override: shown as "exe.png"
    ("photo\u202e\u2066gnp.exe\u2069", "photognp.exe"),
    ("a\u200bb\u200cc\u200dd\u200ee\u200ff.txt", "abcdef.txt"),  # zero-width and direction marks
    ("\ufeffreport.pdf", "report.pdf"),           # byte-order mark
    ("\u2067x\u2068y\u202a\u202b\u202c\u202d.png", "xy.png"),
    ("tab\there\x00\x7f\x85.txt", "tabhere.txt"),
    ("보고서.pdf", "보고서.pdf"),
    ("../../etc/passwd", "passwd"),
    ('a"b;c.txt', "a_b_c.txt"),
    ("\u202e", "file"),
    (" . hidden", "hidden"),
    (None, "file"),
])
def test_control_and_format_characters_are_dropped(raw, clean):
    assert sanitize_filename(raw) == clean


def test_a_download_never_echoes_a_bidi_override_even_from_an_old_record():
    meta = StoredFile(key="k", filename="\u202egnp.exe", content_type="application/octet-stream", length=1,
                      channel_id=1, kind="direct", uploader_id=1)
    disposition = _download_headers(meta)["Content-Disposition"]
    assert disposition == "attachment; filename=\"gnp.exe\"; filename*=UTF-8''gnp.exe"


@given(st.text(max_size=400))
@example("\ud800x")  # a lone surrogate must not break the UTF-8 of the header
@example("a" * 199 + " \u202e")
def test_sanitized_names_are_visible_short_and_one_segment(raw):
    name = sanitize_filename(raw)
    assert name and len(name) <= MAX_FILENAME_CHARS
    assert not any(unicodedata.category(char) in INVISIBLE for char in name)
    assert not set(name) & set('/\\"\r\n;')
    assert name == name.strip() and not name.startswith(".")
    assert name.encode("utf-8")
    assert sanitize_filename(name) == name


@given(st.text(max_size=300))
def test_the_content_disposition_header_is_one_clean_line(raw):
    meta = StoredFile(key="k", filename=raw, content_type="image/png", length=1, channel_id=1, kind="direct",
                      uploader_id=1)
    disposition = _download_headers(meta)["Content-Disposition"]
    assert disposition.isascii() and "\r" not in disposition and "\n" not in disposition
    assert not any(unicodedata.category(c) in INVISIBLE for c in unquote(disposition.split("''", 1)[1]))
