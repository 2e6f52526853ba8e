// A reading client that never misses an event of its rooms: it keeps the last `seq` it got per
// room and, after any disconnect, resubscribes with `since-seq` (driven by
// tests/integration/test_js_clients.py::test_a_stompjs_client_resumes_after_a_disconnect).
//
// Usage: node resume_client.js '<json options>'
//   options: { readerUrl, senderUrl, readerToken, senderToken, room, before, during, after, timeoutMs? }
// The sender (plain WebSocket) sends `before` messages; the reader (sockjs-client) gets them,
// then its connection is cut (forceDisconnect); the sender sends `during` more while it is
// away; the reader reconnects by itself, resumes, and the sender sends `after` more.
// Prints { received: [{seq, message}], resets, subscriptions, errors } once the reader got
// them all, and exits 0; or exits 1 with { error } on timeout.
'use strict';

const { Client } = require('@stomp/stompjs');
const SockJS = require('sockjs-client');
Object.assign(global, { WebSocket: require('ws') });

const options = JSON.parse(process.argv[2]);
const destination = `/topic/direct/${options.room}`;
const expected = options.before + options.during + options.after;
const result = { received: [], resets: 0, subscriptions: [], errors: [] };

function finish(code) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}
setTimeout(() => { result.error = 'timeout'; finish(1); }, options.timeoutMs || 30000);

// What a real client keeps: the last number seen per room destination.
const lastSeq = new Map();

function trackingSubscribe(client, receipt) {
  const headers = lastSeq.has(destination) ? { 'since-seq': String(lastSeq.get(destination)) } : {};
  if (receipt) headers.receipt = receipt;
  result.subscriptions.push(headers['since-seq'] || null);
  client.subscribe(destination, (message) => {
    const body = JSON.parse(message.body);
    if (body.seq === undefined) return; // presence pushes are not numbered
    if (body.type === 'reset') { result.resets += 1; lastSeq.set(destination, body.seq); return; }
    lastSeq.set(destination, Math.max(lastSeq.get(destination) || 0, body.seq));
    result.received.push({ seq: body.seq, message: body.message });
    onReceived();
  }, headers);
}

let phase = 'before';
function onReceived() {
  const got = result.received.length;
  if (phase === 'before' && got === options.before) {
    phase = 'away';
    reader.forceDisconnect(); // the connection drops; stompjs reconnects after reconnectDelay
    sendMany('during', options.during);
  } else if (phase === 'resumed' && got === options.before + options.during) {
    phase = 'after';
    sendMany('after', options.after);
  } else if (got === expected) {
    finish(0);
  }
}

let sent = 0;
function sendMany(label, count) {
  for (let n = 0; n < count; n += 1) {
    sent += 1;
    sender.publish({
      destination: '/kafka/send-direct-message',
      body: JSON.stringify({ channelId: options.room, content: `${label}${n}` }),
      headers: { receipt: `send-${sent}` },
    });
  }
}

const reader = new Client({
  webSocketFactory: () => new SockJS(options.readerUrl, null, { transports: ['websocket'] }),
  connectHeaders: { 'access-token': options.readerToken },
  reconnectDelay: 1000,
  debug: () => {},
  onConnect: () => {
    if (phase === 'away') phase = 'resumed';
    if (phase === 'before' && !senderStarted) {
      // The sender starts once the first SUBSCRIBE is receipted: nothing is sent before it.
      reader.watchForReceipt('subscribed', () => { senderStarted = true; sender.activate(); });
      trackingSubscribe(reader, 'subscribed');
    } else {
      trackingSubscribe(reader);
    }
  },
  onStompError: (frame) => { result.errors.push(frame.headers.message); },
});

let senderStarted = false;
const sender = new Client({
  brokerURL: options.senderUrl,
  connectHeaders: { 'access-token': options.senderToken },
  reconnectDelay: 0,
  debug: () => {},
  onConnect: () => sendMany('before', options.before),
  onStompError: (frame) => { result.errors.push(frame.headers.message); },
});

reader.activate();
