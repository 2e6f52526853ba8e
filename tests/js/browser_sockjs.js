// @stomp/stompjs over sockjs-client in headless Chromium, on one forced SockJS transport,
// driven by tests/integration/test_sockjs_browser.py.
//
// Usage: node browser_sockjs.js '<json options>'
//   options: { chatUrl, transport, token, userId, timeoutMs? }
// Serves a test page from an origin of its own (127.0.0.1, another port), so the chat server is
// cross-origin as for the real web client. The page loads sockjs-client from the chat server
// (its own copy, /static/sockjs.min.js) and @stomp/stompjs from here, connects with only
// `transport` allowed, subscribes, publishes through SEND /kafka/publish with a receipt, waits
// for the MESSAGE, and disconnects. Chromium resolves no host name at all
// (--host-resolver-rules), so nothing can come from the Internet; the page checks that by
// trying the CDN copy the server used to reference. Prints one JSON object:
//   { connected, transport, publishReceipt, message, disconnectReceipt, errors, cdnReachable }
// and exits 0, or exits 1 with { error }.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { withOfflineChromium } = require('./chromium');

const CDN_COPY = 'https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js';
const STOMP_BUNDLE = path.join(__dirname, 'node_modules/@stomp/stompjs/bundles/stomp.umd.min.js');

const options = JSON.parse(process.argv[2]);

function page(opts) {
  return `<!doctype html><html><head>
<script src="${opts.chatUrl}/static/sockjs.min.js"></script>
<script src="/stomp.umd.min.js"></script>
</head><body><script>
const result = { connected: false, errors: [] };
const cdn = document.createElement('script');
cdn.onload = () => { result.cdnReachable = true; };
cdn.onerror = () => { result.cdnReachable = false; };
cdn.src = ${JSON.stringify(CDN_COPY)};
document.head.appendChild(cdn);
let sock = null;
const destination = '/topic/group/12';
const client = new StompJs.Client({
  webSocketFactory: () => {
    sock = new SockJS(${JSON.stringify(opts.chatUrl + '/my-chat')}, null, { transports: [${JSON.stringify(opts.transport)}] });
    return sock;
  },
  connectHeaders: { 'access-token': ${JSON.stringify(opts.token)}, 'user-id': ${JSON.stringify(String(opts.userId))} },
  heartbeatIncoming: 0,
  heartbeatOutgoing: 0,
  reconnectDelay: 0,
  onConnect: () => {
    result.connected = true;
    result.transport = sock.transport;
    client.subscribe(destination, (message) => {
      result.message = { destination: message.headers.destination, body: message.body };
      client.deactivate();
    });
    client.watchForReceipt('publish-1', (receipt) => { result.publishReceipt = receipt.headers['receipt-id']; });
    client.publish({ destination: '/kafka/publish', headers: { receipt: 'publish-1' },
                     body: JSON.stringify({ destination, body: '{"type":"message","message":"héllo"}' }) });
  },
  onDisconnect: (receipt) => {
    result.disconnectReceipt = receipt.command === 'RECEIPT' ? receipt.headers['receipt-id'] : null;
    window.__result = result;
  },
  onStompError: (frame) => { result.errors.push(frame.headers.message); },
  onWebSocketClose: (event) => {
    if (!result.connected) { result.error = 'closed before CONNECTED: ' + event.reason; window.__result = result; }
  },
});
client.activate();
</script></body></html>`;
}

function servePage() {
  const server = http.createServer((req, res) => {
    if (req.url === '/stomp.umd.min.js') {
      res.writeHead(200, { 'Content-Type': 'application/javascript' });
      res.end(fs.readFileSync(STOMP_BUNDLE));
    } else if (req.url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=UTF-8' });
      res.end(page(options));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const server = await servePage();
  try {
    return await withOfflineChromium(async (browser) => {
      const tab = await browser.newPage();
      await tab.goto(`http://127.0.0.1:${server.address().port}/`);
      const handle = await tab.waitForFunction('window.__result', { timeout: options.timeoutMs || 30000 });
      const result = await handle.jsonValue();
      process.stdout.write(JSON.stringify(result) + '\n');
      return result.error ? 1 : 0;
    });
  } finally {
    server.close();
  }
}

main().then((code) => process.exit(code), (error) => {
  process.stdout.write(JSON.stringify({ error: String(error) }) + '\n');
  process.exit(1);
});
