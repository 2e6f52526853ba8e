// One @stomp/stompjs session against the chat server, driven by tests/integration/test_js_clients.py.
//
// Usage: node stomp_roundtrip.js '<json options>'
//   options: { url, mode: "websocket" | "sockjs", transports?: [...], token, userId,
//              publish?: true, destination?, ack?: "client" | "client-individual", timeoutMs? }
// Connects (access-token + user-id headers, heart-beats 10000,10000). With `publish`
// (the transport tests' application double only) it subscribes to `destination`, publishes
// one event through SEND /kafka/publish with a receipt and waits for the MESSAGE. With `ack`
// it subscribes in that ack mode and acknowledges the MESSAGE with message.ack({receipt})
// (`ackHeader`, `ackReceipt`). Then it deactivates (DISCONNECT with a receipt). Prints one
// JSON object:
//   { connected, version, heartBeat, session, transport, publishReceipt, message, ackHeader,
//     ackReceipt, disconnectReceipt, errors } and exits 0, or exits 1 with { error } on timeout.
'use strict';

const { Client } = require('@stomp/stompjs');
const SockJS = require('sockjs-client');
Object.assign(global, { WebSocket: require('ws') });

const options = JSON.parse(process.argv[2]);
const result = { connected: false, errors: [] };
let sock = null;

function finish(code) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}

setTimeout(() => { result.error = 'timeout'; finish(1); }, options.timeoutMs || 20000);

const config = {
  connectHeaders: { 'access-token': options.token, 'user-id': String(options.userId) },
  heartbeatIncoming: 10000,
  heartbeatOutgoing: 10000,
  reconnectDelay: 0,
  debug: () => {},
  onConnect: (frame) => {
    result.connected = true;
    result.version = frame.headers.version;
    result.heartBeat = frame.headers['heart-beat'];
    result.session = frame.headers.session;
    result.transport = sock && sock.transport ? sock.transport : 'websocket';
    if (!options.publish) {
      client.deactivate();
      return;
    }
    const destination = options.destination || '/topic/group/12';
    const subscribeHeaders = options.ack ? { ack: options.ack } : {};
    client.subscribe(destination, (message) => {
      result.message = { destination: message.headers.destination, body: message.body };
      if (!options.ack) {
        client.deactivate();
        return;
      }
      result.ackHeader = message.headers.ack === undefined ? null : message.headers.ack;
      client.watchForReceipt('ack-1', (receipt) => {
        result.ackReceipt = receipt.headers['receipt-id'];
        client.deactivate();
      });
      message.ack({ receipt: 'ack-1' });
    }, subscribeHeaders);
    client.watchForReceipt('publish-1', (receipt) => { result.publishReceipt = receipt.headers['receipt-id']; });
    client.publish({
      destination: '/kafka/publish',
      body: JSON.stringify({ destination, body: '{"type":"message","message":"héllo"}' }),
      headers: { receipt: 'publish-1' },
    });
  },
  onDisconnect: (receipt) => {
    result.disconnectReceipt = receipt.command === 'RECEIPT' ? receipt.headers['receipt-id'] : null;
    finish(0);
  },
  onStompError: (frame) => { result.errors.push(frame.headers.message); },
  onWebSocketClose: () => { if (!result.connected) { result.error = 'closed before CONNECTED'; finish(1); } },
};

if (options.mode === 'sockjs') {
  config.webSocketFactory = () => {
    sock = new SockJS(options.url, null, options.transports ? { transports: options.transports } : {});
    return sock;
  };
} else {
  config.brokerURL = options.url;
}

const client = new Client(config);
client.activate();
