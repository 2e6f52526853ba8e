// The original web client's community-channel flow, with @stomp/stompjs over sockjs-client
// (driven by tests/integration/test_channels_without_lists.py).
//
// Usage: node channel_client.js '<json options>'
//   options: { url, token, userId, communityId, channelId, content, timeoutMs? }
// Connects (access-token + user-id headers), SUBSCRIBEs /topic/group/{channelId} (with a
// receipt), SENDs /kafka/send-channel-message {communityId, channelId, content} as the web
// client does (with a receipt), waits for its own message on the channel, then deactivates.
// Prints { connected, transport, subscribed, sendReceipt, messageId, received, errors } and
// exits 0, or exits 1 with { error } on timeout.
'use strict';

const { Client } = require('@stomp/stompjs');
const SockJS = require('sockjs-client');
Object.assign(global, { WebSocket: require('ws') });

const options = JSON.parse(process.argv[2]);
const destination = `/topic/group/${options.channelId}`;
const result = { connected: false, received: [], errors: [] };
let sock = null;

function finish(code) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}
setTimeout(() => { result.error = 'timeout'; finish(1); }, options.timeoutMs || 20000);

const client = new Client({
  webSocketFactory: () => { sock = new SockJS(options.url); return sock; },
  connectHeaders: { 'access-token': options.token, 'user-id': String(options.userId) },
  reconnectDelay: 0,
  debug: () => {},
  onConnect: () => {
    result.connected = true;
    result.transport = sock && sock.transport;
    client.watchForReceipt('sub-1', () => {
      result.subscribed = true;
      client.watchForReceipt('send-1', (receipt) => {
        result.sendReceipt = receipt.headers['receipt-id'];
        result.messageId = receipt.headers['message-id'];
      });
      client.publish({
        destination: '/kafka/send-channel-message',
        body: JSON.stringify({ communityId: options.communityId, channelId: options.channelId,
                               content: options.content, userId: options.userId, name: 'web' }),
        headers: { receipt: 'send-1' },
      });
    });
    client.subscribe(destination, (message) => {
      const body = JSON.parse(message.body);
      result.received.push(body);
      if (body.message === options.content) client.deactivate();
    }, { receipt: 'sub-1' });
  },
  onDisconnect: () => finish(0),
  onStompError: (frame) => { result.errors.push(frame.headers.message); },
  onWebSocketClose: () => { if (!result.connected) { result.error = 'closed before CONNECTED'; finish(1); } },
});
client.activate();
