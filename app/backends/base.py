"""Transitional: ``TOPICS`` for ``workers/consumers.py``, the one importer left outside this branch's files.

The model now lives in ``app.chat.model`` and the interfaces in ``app.chat.ports``. Delete this
module once ``workers/consumers.py`` imports ``TOPICS`` from ``app.chat.model``.
"""

from app.chat.model import TOPICS

__all__ = ["TOPICS"]
