"""The SockJS iframe transports in a real browser, with nothing reachable on the Internet.

tests/js/browser_sockjs.js drives Debian's Chromium (puppeteer-core): a page on another
origin runs @stomp/stompjs over sockjs-client forced onto one iframe transport, against the
in-process chat server. Chromium resolves no host name, so ``iframe.html`` works only
because it loads the chat server's own sockjs-client copy (/static/sockjs.min.js, installed
from npm by `make`); the page checks that the CDN copy it used to load is out of reach.
"""

import pytest

from tests.support.chat import run_js_script


@pytest.mark.parametrize("transport", ["iframe-htmlfile", "iframe-xhr-polling", "iframe-eventsource"])
def test_stompjs_over_an_iframe_transport_offline(server, application, token_for, transport):
    result = run_js_script("browser_sockjs.js", chatUrl=server.http_url, transport=transport,
                           token=token_for(5), userId=5)
    assert result.get("error") is None, result
    assert result["cdnReachable"] is False  # the Internet is out of reach for this browser
    assert (result["connected"], result["transport"]) == (True, transport)
    assert result["publishReceipt"] == "publish-1"
    assert result["message"] == {"destination": "/topic/group/12", "body": '{"type":"message","message":"héllo"}'}
    assert result["disconnectReceipt"], result
    assert result["errors"] == []
    assert [c.user_id for c in application.connections] == [5]
