"""The browser demo at ``/demo`` (``DEMO_ENABLED=on``; ``make run`` turns it on).

- ``routes``: ``create_demo_blueprint``, the page, its script and style, and the dev-only
  endpoints behind it: ``POST /demo/session`` (a token and the demo's rooms for a chosen
  user) and ``POST /demo/presence`` (who is online, from the presence server);
- ``world``: the demo's fixed users, community, channels and DM rooms;
- ``assets/``: the page itself (plain HTML, CSS and JS; @stomp/stompjs and sockjs-client
  come from the server's own copies under ``/static``).

None of it exists when the demo is off: every ``/demo`` path answers 404.
"""

from app.demo.routes import create_demo_blueprint

__all__ = ["create_demo_blueprint"]
