"""File messages: ``POST /chat-server/file``, ``POST /chat-server/channel/file`` and the
authorised download ``GET /chat-server/file/<key>`` (protocol.md §4.4, §2.7; W-17).

Upload form (multipart, §4.4 names): ``image`` (the file, required), ``thumbnail`` (optional
file), ``channelId``, ``communityId`` (channel variant), ``fileType``, ``name``,
``profileImage``. ``userId`` and ``type`` are ignored: the author is the token's user and
the room kind is the path's.

Each file is checked (non-empty, at most ``settings.upload_max_bytes`` → else 413, content
type starting with one of ``settings.upload_type_prefixes`` → else 415), then stored under
a random server key; the client's file name is kept, sanitised, as metadata for
``Content-Disposition`` only. The message (``type`` = fileType, ``content`` = the file's
URL path) then goes through the message pipeline (``Messaging.post_file`` in
app/chat/handlers.py: group commit, stored durably; the outbox relay then publishes the §2.7
FileUploadResponse to ``file-topic`` keyed by the room id). The answer comes once the message
is stored. If storing it fails, this module removes the files and the answer is 503: nothing
is left half-done.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from typing import Any, BinaryIO, Iterator
from urllib.parse import quote

from flask import Blueprint, Response, request
from werkzeug.datastructures import FileStorage

from app.chat.handlers import Messaging
from app.chat.http.auth import RequestAuth
from app.chat.http.params import positive_int
from app.chat.model import ChatMessage, StoredFile
from app.chat.ports import FileStore
from app.chat.profiles import Profiles
from app.chat.timefmt import utcnow
from app.destinations import RoomKind
from app.errors import BackendUnavailable, BadRequest, ChatServerError, NotFound
from app.http_envelope import success
from app.settings import Settings

__all__ = ["register_files", "file_url", "sanitize_filename", "MAX_FILENAME_CHARS"]

log = logging.getLogger(__name__)

FILE_PATH = "/chat-server/file/"
FORM_OVERHEAD_BYTES = 256 * 1024
MAX_TEXT_FIELD = 2048
_KEY = re.compile(r"[0-9a-f]{32}")
_FILE_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MIME = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,128}")
_INLINE_PREFIXES = ("image/", "video/", "audio/")
_UNSAFE_NAME_CHARS = re.compile(r'["\\/:*?<>|;]')
# Unicode categories dropped from file names: controls (Cc), format characters (Cf: bidi
# overrides and isolates, zero-width characters, the BOM) and lone surrogates (Cs). A name
# like "\u202egnp.exe" would otherwise display as "exe.png".
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
MAX_FILENAME_CHARS = 200
# Leading dots and spaces (hidden files, ". exe"), trailing spaces.
_NAME_EDGES = re.compile(r"^[\s.]+|\s+$")


class _TooLarge(ChatServerError):
    wire_message = "file too large"
    http_status = 413


class _UnsupportedType(ChatServerError):
    wire_message = "unsupported file type"
    http_status = 415


def file_url(key: str) -> str:
    """The download path of stored file ``key``, which is also a file message's content."""
    return FILE_PATH + key


def register_files(bp: Blueprint, settings: Settings, *, auth: RequestAuth, files: FileStore,
                   messaging: Messaging, profiles: Profiles) -> None:
    uploads = _Uploads(settings, auth=auth, files=files, messaging=messaging, profiles=profiles)
    bp.add_url_rule("/file", "upload_direct_file", lambda: uploads.upload("direct"), methods=["POST"])
    bp.add_url_rule("/channel/file", "upload_channel_file", lambda: uploads.upload("channel"), methods=["POST"])
    bp.add_url_rule("/file/<key>", "download_file", uploads.download, methods=["GET"])


class _Uploads:
    def __init__(self, settings: Settings, *, auth: RequestAuth, files: FileStore, messaging: Messaging,
                 profiles: Profiles) -> None:
        self._settings = settings
        self._auth = auth
        self._files = files
        self._messaging = messaging
        self._profiles = profiles

    def upload(self, kind: RoomKind) -> Response:
        user_id = self._auth.user().user_id
        # Two files plus text fields; anything bigger is refused before it is parsed (413).
        request.max_content_length = 2 * self._settings.upload_max_bytes + FORM_OVERHEAD_BYTES
        form, parts = request.form, request.files
        channel_id = positive_int(form.get("channelId"), "channelId")
        community_id = positive_int(form.get("communityId"), "communityId") if kind == "channel" else None
        file_type = _file_type(form.get("fileType"))
        room = self._authorize(_Room(kind, channel_id, community_id, user_id))
        image = self._checked(parts.get("image"), "image")
        thumbnail = self._checked(parts.get("thumbnail"), "thumbnail") if _sent(parts.get("thumbnail")) else None
        name, avatar = self._author(user_id, form.get("name"), form.get("profileImage"))
        return success(self._store(room, file_type, name, avatar, image, thumbnail))

    def download(self, key: str) -> Response:
        user_id = self._auth.user().user_id
        found = self._files.open(key) if _KEY.fullmatch(key) else None
        if found is None:
            raise NotFound("file not found")
        meta, stream = found
        try:
            self._auth.require_room(meta.kind, meta.channel_id, user_id, community_id=meta.community_id)
        except BaseException:
            stream.close()
            raise
        return Response(_chunks(stream), status=200, headers=_download_headers(meta), direct_passthrough=True)

    # -- upload steps --------------------------------------------------------------------

    def _authorize(self, room: "_Room") -> "_Room":
        """A DM room needs membership; a channel upload names its community, whose member the
        uploader must be (app/chat/channel_scope.py). Returns the room with its community."""
        if room.kind == "direct":
            self._auth.require_room(room.kind, room.channel_id, room.user_id)
            return room
        community_id = self._auth.require_channel_of(room.channel_id, room.community_id, room.user_id)
        return _Room(room.kind, room.channel_id, community_id, room.user_id)

    def _checked(self, part: FileStorage | None, field: str) -> FileStorage:
        if not _sent(part):
            raise BadRequest(f"{field}: file required")
        assert part is not None
        size = _size(part.stream)
        if size == 0:
            raise BadRequest(f"{field}: empty file")
        if size > self._settings.upload_max_bytes:
            raise _TooLarge()
        if not _allowed_type(part.mimetype, self._settings.upload_type_prefixes):
            raise _UnsupportedType()
        return part

    def _author(self, user_id: int, form_name: str | None, form_avatar: str | None) -> tuple[str | None, str | None]:
        """Current profile when the auth service knows the user, else the form's (bounded) values."""
        profile = self._profiles.lookup(user_id) if self._profiles.enabled else None
        if profile is not None:
            return profile.name, profile.image
        return _bounded(form_name, "name"), _bounded(form_avatar, "profileImage")

    def _store(self, room: "_Room", file_type: str, name: str | None, avatar: str | None,
               image: FileStorage, thumbnail: FileStorage | None) -> dict[str, Any]:
        """Save the files, then post the message; on any failure remove the files again."""
        saved: list[str] = []
        try:
            image_key = self._save(image, room, saved)
            thumb_key = self._save(thumbnail, room, saved) if thumbnail is not None else None
            message = self._messaging.post_file(ChatMessage(
                kind=room.kind, channel_id=room.channel_id, community_id=room.community_id,
                user_id=room.user_id, content=file_url(image_key), created_at=utcnow(), name=name,
                profile_image=avatar, type=file_type,
                thumbnail=file_url(thumb_key) if thumb_key else None))
        except Exception as exc:
            self._remove(saved)
            if isinstance(exc, ChatServerError) and exc.http_status < 500:
                raise
            log.warning("file upload rolled back: %s", type(exc).__name__)
            raise BackendUnavailable("upload failed, try again") from exc
        return {"id": message.id, "url": message.content, "thumbnail": message.thumbnail}

    def _save(self, part: FileStorage, room: "_Room", saved_keys: list[str]) -> str:
        """Store one uploaded part under a new key, noted in ``saved_keys`` for the undo."""
        part.stream.seek(0)
        meta = StoredFile(key="", filename=sanitize_filename(part.filename), content_type=_mime(part.mimetype),
                          length=0, kind=room.kind, channel_id=room.channel_id, uploader_id=room.user_id,
                          uploaded_at=utcnow(), community_id=room.community_id)
        stored = self._files.save(part.stream, meta)
        saved_keys.append(stored.key)
        return stored.key

    def _remove(self, keys: list[str]) -> None:
        try:
            for key in keys:
                self._files.delete(key)
        except Exception:  # the original failure is what the client must hear about
            log.exception("could not undo a failed upload")


class _Room:
    __slots__ = ("kind", "channel_id", "community_id", "user_id")

    def __init__(self, kind: RoomKind, channel_id: int, community_id: int | None, user_id: int) -> None:
        self.kind, self.channel_id, self.community_id, self.user_id = kind, channel_id, community_id, user_id


def _sent(part: FileStorage | None) -> bool:
    return part is not None and bool(part.filename or _size(part.stream))


def _size(stream: BinaryIO) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def _file_type(value: str | None) -> str:
    if value is None or not _FILE_TYPE.fullmatch(value):
        raise BadRequest("fileType: required (image, video, file...)")
    return value


def _bounded(value: str | None, field: str) -> str | None:
    if value is not None and len(value) > MAX_TEXT_FIELD:
        raise BadRequest(f"{field}: too long")
    return value or None


def _mime(mimetype: str | None) -> str:
    value = (mimetype or "").strip().lower()
    return value if _MIME.fullmatch(value) else "application/octet-stream"


def _allowed_type(mimetype: str | None, prefixes: tuple[str, ...]) -> bool:
    value = (mimetype or "").strip().lower()
    return bool(_MIME.fullmatch(value)) and any(value.startswith(prefix.lower()) for prefix in prefixes)


def sanitize_filename(name: str | None) -> str:
    """The last path segment, without control or format characters, quotes or path
    separators, at most ``MAX_FILENAME_CHARS`` long; ``file`` if nothing is left."""
    visible = "".join(char for char in name or "" if unicodedata.category(char) not in _INVISIBLE_CATEGORIES)
    text = unicodedata.normalize("NFC", visible)
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _UNSAFE_NAME_CHARS.sub("_", text)
    return _NAME_EDGES.sub("", _NAME_EDGES.sub("", text)[:MAX_FILENAME_CHARS]) or "file"


def _download_headers(meta: StoredFile) -> dict[str, str]:
    content_type = _mime(meta.content_type)
    inline = content_type.startswith(_INLINE_PREFIXES) and "svg" not in content_type
    # Sanitised again: names stored before the sanitiser dropped format characters.
    name = sanitize_filename(meta.filename)
    ascii_name = name.encode("ascii", "ignore").decode() or "file"
    disposition = (f"{'inline' if inline else 'attachment'}; filename=\"{ascii_name}\"; "
                   f"filename*=UTF-8''{quote(name, safe='')}")
    return {
        "Content-Type": content_type,
        "Content-Length": str(meta.length),
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
        # Even if a browser renders the file, it gets no script and no same-origin access.
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=86400",
    }


def _chunks(stream: BinaryIO, size: int = 256 * 1024) -> Iterator[bytes]:
    try:
        while block := stream.read(size):
            yield block
    finally:
        stream.close()
