// The Smooth browser demo: @stomp/stompjs over sockjs-client (both the server's own copies,
// loaded before this file), the /chat-server HTTP API, and the dev-only /demo endpoints.
//
// One user per tab: /demo?user=9001 starts at once (&page=N sets the history page size).
// The client keeps the highest `seq` it got per room and, after any disconnect, resubscribes
// with `since-seq` (README "Sequence numbers and resume"). window.demo exposes the state to
// the end-to-end test (tests/js/demo_e2e.js).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const PAGE_SIZE = Number(params.get('page')) || 20;
  const TYPING_EVERY_MS = 2000;
  const TYPING_SHOWN_MS = 3500;

  const state = {
    token: null, me: null, names: new Map(), community: null, voiceChannel: null,
    rooms: [], current: null, client: null, connects: 0, receipts: 0,
    lastSeq: {},        // destination -> highest seq received (pushes and history)
    resumes: [],        // [{destination, since}] of every resubscription, for the test
    messages: {},       // room key -> Map(id -> message)
    more: {},           // room key -> whether older history may exist
    unread: {},         // room key -> count
    online: new Map(),  // user id -> location or 'offline'
    voice: [],          // user ids in the voice channel
    joined: null,       // the room whose join-channel the server acknowledged last
    lastTyping: {},     // room key -> when this page last sent typing there
    mode: null,
  };
  window.demo = state;

  // -- HTTP ------------------------------------------------------------------------------------

  async function call(method, path, body, form) {
    const headers = state.token ? { Authorization: 'Bearer ' + state.token } : {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, { method, headers, body: form || (body === undefined ? undefined : JSON.stringify(body)) });
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${data && data.message}`);
    return data && typeof data === 'object' && 'isSuccess' in data ? data.result : data;
  }

  // -- STOMP -----------------------------------------------------------------------------------

  function connect() {
    state.client = new StompJs.Client({
      webSocketFactory: () => new SockJS(location.origin + '/my-chat'),
      connectHeaders: { 'access-token': state.token },
      reconnectDelay: 1000,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      onConnect: connected,
      onWebSocketClose: () => setStatus(state.client && state.client.active ? 'reconnecting' : 'offline'),
      onStompError: (frame) => showError(frame.headers.message),
    });
    state.client.activate();
  }

  function connected() {
    state.connects += 1;
    setStatus('connected');
    for (const room of state.rooms) subscribeRoom(room);
    state.client.subscribe(`/topic/community/${state.community}`, (m) => onCommunity(JSON.parse(m.body)));
    if (state.connects === 1) {
      openRoom(state.rooms[0]);
    } else {
      join(state.current);
    }
    refreshPresence();
  }

  function subscribeRoom(room) {
    const since = state.lastSeq[room.destination];
    const headers = since === undefined ? {} : { 'since-seq': String(since) };
    if (since !== undefined) state.resumes.push({ destination: room.destination, since });
    state.client.subscribe(room.destination, (m) => onRoomPush(room, JSON.parse(m.body)), headers);
  }

  function send(destination, body, onReceipt) {
    const receipt = `r-${++state.receipts}`;
    if (onReceipt) state.client.watchForReceipt(receipt, onReceipt);
    state.client.publish({ destination: '/kafka/' + destination, body: JSON.stringify(body), headers: { receipt } });
  }

  function roomFields(room) {
    return room.kind === 'direct' ? { channelId: room.id } : { communityId: state.community, channelId: room.id };
  }

  function join(room) {
    state.joined = null;
    send('join-channel', { channel_id: room.key }, () => {
      state.joined = room.key;
      refreshCounts();
      send('community-signaling', { community_id: state.community });
    });
  }

  // -- pushes ----------------------------------------------------------------------------------

  function onRoomPush(room, body) {
    if (typeof body.seq === 'number') {
      state.lastSeq[room.destination] = Math.max(state.lastSeq[room.destination] || 0, body.seq);
    }
    const messages = roomMessages(room);
    switch (body.type) {
      case 'message': case 'reply':
        messages.set(body.id, fromPush(body));
        noteUnread(room);
        break;
      case 'direct': case 'community':  // a file message
        messages.set(body.id, fromPush(body));
        noteUnread(room);
        break;
      case 'modify': {
        const found = messages.get(body.id);
        if (found) Object.assign(found, { text: body.message, edited: true });
        break;
      }
      case 'delete':
        messages.delete(body.id);
        break;
      case 'typing':
        if (room === state.current && body.name !== state.me.name) showTyping(body.name);
        return;
      case 'reset':  // too far behind for a replay: reload the history, go on from the latest
        state.lastSeq[room.destination] = body.seq;
        if (room === state.current) openRoom(room);
        return;
      case 'connect': case 'disconnect': case 'out':
        onCommunity(body);
        return;
      default:
        return;
    }
    if (room === state.current) renderMessages();
  }

  function onCommunity(body) {
    if (body.type === 'connect' || body.type === 'disconnect') {
      state.online.set(Number(body.userId), body.type === 'connect' ? 'online' : 'offline');
      renderPeople();
      refreshPresence();
    } else if (body.type === 'out') {
      const gone = new Set((body.ids || []).map(Number));
      state.voice = state.voice.filter((id) => !gone.has(id));
      renderVoice();
    } else if (!('type' in body)) {  // the voice occupancy map {"<voice channel>": ["<user>", ...]}
      state.voice = (body[String(state.voiceChannel)] || []).map(Number);
      renderVoice();
      refreshPresence();  // someone joined a room or the voice channel: locations changed
    }
  }

  function fromPush(body) {
    const file = body.type === 'direct' || body.type === 'community';
    return {
      id: body.id, userId: Number(body.userId), name: body.name, text: file ? '' : body.message,
      time: body.time, seq: body.seq, edited: false, parentName: body.parentName, parentContent: body.parentContent,
      fileUrl: file ? body.message : null, fileType: file ? body.fileType : null,
    };
  }

  function fromHistory(item) {
    const file = item.fileType && item.fileType !== 'text' && String(item.message).startsWith('/chat-server/file/');
    return {
      id: item.id, userId: Number(item.userId), name: item.name, text: file ? '' : item.message, time: item.time,
      seq: item.seq, edited: item.edited, parentName: item.parentName, parentContent: item.parentContent,
      fileUrl: file ? item.message : null, fileType: file ? item.fileType : null,
    };
  }

  function roomMessages(room) {
    if (!state.messages[room.key]) state.messages[room.key] = new Map();
    return state.messages[room.key];
  }

  function noteUnread(room) {
    if (room === state.current) return;
    if (room.kind === 'direct') refreshCounts();
    else { state.unread[room.key] = (state.unread[room.key] || 0) + 1; renderRooms(); }
  }

  // -- rooms, history, counts, presence --------------------------------------------------------

  async function openRoom(room) {
    state.current = room;
    state.unread[room.key] = 0;
    setMode(null);
    $('typing').textContent = '';
    $('room-title').textContent = room.title;
    renderRooms();
    join(room);
    state.messages[room.key] = new Map();
    await loadHistory(room);
  }

  async function loadHistory(room, before) {
    const path = room.kind === 'direct' ? '/chat-server/direct' : '/chat-server/community';
    const query = `?ch_id=${room.id}&size=${PAGE_SIZE}` + (before ? `&before=${before}` : '');
    const items = await call('GET', path + query);
    const messages = roomMessages(room);
    const older = new Map(items.map((item) => [item.id, fromHistory(item)]));
    state.messages[room.key] = new Map([...older, ...messages]);
    for (const item of items) {
      if (typeof item.seq === 'number') {
        state.lastSeq[room.destination] = Math.max(state.lastSeq[room.destination] || 0, item.seq);
      }
    }
    state.more[room.key] = items.length === PAGE_SIZE;
    if (room === state.current) renderMessages();
  }

  async function refreshCounts() {
    const direct = state.rooms.filter((room) => room.kind === 'direct');
    const counts = await call('POST', '/chat-server/message-count', { roomIds: direct.map((room) => room.id) });
    for (const entry of counts) {
      const room = direct.find((r) => r.id === entry.roomId);
      state.unread[room.key] = room === state.current ? 0 : entry.count;
    }
    renderRooms();
  }

  async function refreshPresence() {
    const where = await call('POST', '/demo/presence', [...state.names.keys()]);
    for (const [id, location] of Object.entries(where)) state.online.set(Number(id), location);
    renderPeople();
  }

  // -- actions ---------------------------------------------------------------------------------

  function submit(event) {
    event.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    const room = state.current;
    const kind = room.kind === 'direct' ? 'direct' : 'channel';
    if (state.mode && state.mode.edit) {
      send(`send-${kind}-modify`, { ...roomFields(room), id: state.mode.edit, content: text });
    } else if (state.mode && state.mode.reply) {
      send(`send-${kind}-reply`, { ...roomFields(room), parentId: state.mode.reply, content: text, name: state.me.name });
    } else {
      send(`send-${kind}-message`, { ...roomFields(room), content: text, name: state.me.name, nonce: crypto.randomUUID() });
    }
    $('text').value = '';
    setMode(null);
  }

  function typing() {  // at most one typing SEND per room every TYPING_EVERY_MS, as the server allows
    const room = state.current;
    const now = Date.now();
    if (now - (state.lastTyping[room.key] || 0) < TYPING_EVERY_MS || !state.client || !state.client.connected) return;
    state.lastTyping[room.key] = now;
    send(`send-${room.kind === 'direct' ? 'direct' : 'channel'}-typing`, { ...roomFields(room), name: state.me.name });
  }

  function remove(message) {
    const kind = state.current.kind === 'direct' ? 'direct' : 'channel';
    send(`send-${kind}-delete`, { ...roomFields(state.current), id: message.id });
  }

  async function upload() {
    const file = $('file').files[0];
    if (!file) return;
    const room = state.current;
    const form = new FormData();
    form.append('image', file, file.name);
    form.append('channelId', String(room.id));
    if (room.kind === 'channel') form.append('communityId', String(state.community));
    form.append('fileType', file.type.startsWith('image/') ? 'image' : 'file');
    form.append('name', state.me.name);
    try {
      await call('POST', room.kind === 'direct' ? '/chat-server/file' : '/chat-server/channel/file', undefined, form);
    } catch (error) {
      showError(error.message);
    }
    $('file').value = '';
  }

  async function fetchFile(url) {  // downloads need the token in a header, so no bare <a href>
    const response = await fetch(url, { headers: { Authorization: 'Bearer ' + state.token } });
    if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
    const name = /filename="([^"]*)"/.exec(response.headers.get('Content-Disposition') || '');
    return { blob: await response.blob(), name: name ? name[1] : 'file' };
  }

  async function download(message, item) {
    try {
      const { blob, name } = await fetchFile(message.fileUrl);
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = name;
      link.click();
      item.dataset.downloaded = `${name}:${blob.size}`;
    } catch (error) {
      showError(error.message);
    }
  }

  function setMode(mode, label) {
    state.mode = mode;
    $('composing').hidden = !mode;
    $('composing-text').textContent = label || '';
    if (mode && mode.edit) $('text').value = label.replace(/^Editing: /, '');
  }

  // -- rendering -------------------------------------------------------------------------------

  function element(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props || {});
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function renderRooms() {
    $('rooms').replaceChildren(...state.rooms.map((room) => {
      const count = room === state.current ? 0 : state.unread[room.key] || 0;
      const badge = element('span', { className: 'unread', textContent: String(count) });
      badge.dataset.count = String(count);
      const item = element('li', { className: room === state.current ? 'current' : '' },
        element('span', { textContent: room.title }), badge);
      item.dataset.room = room.key;
      item.addEventListener('click', () => openRoom(room));
      return item;
    }));
  }

  function renderMessages() {
    const room = state.current;
    const messages = [...roomMessages(room).values()].sort((a, b) => (a.seq || 0) - (b.seq || 0));
    $('older').hidden = !state.more[room.key];
    $('messages').replaceChildren(...messages.map((message) => renderMessage(message)));
    $('messages').scrollTop = $('messages').scrollHeight;
  }

  function renderMessage(message) {
    const mine = message.userId === state.me.id;
    const item = element('li');
    item.dataset.id = message.id;
    item.dataset.author = state.names.get(message.userId) || message.name || String(message.userId);
    const actions = element('span', { className: 'actions' });
    actions.append(button('Reply', 'reply', () => setMode({ reply: message.id }, `Replying to ${item.dataset.author}`)));
    if (mine && !message.fileUrl) {
      actions.append(button('Edit', 'edit', () => setMode({ edit: message.id }, `Editing: ${message.text}`)));
    }
    if (mine) actions.append(button('Delete', 'delete', () => remove(message)));
    item.append(actions);
    if (message.parentName !== undefined && message.parentName !== null) {
      item.append(element('div', { className: 'parent', textContent: `${message.parentName}: ${message.parentContent}` }));
    }
    item.append(element('span', { className: 'author', textContent: item.dataset.author }));
    if (message.fileUrl) {
      item.append(element('span', { className: 'text', textContent: message.fileType === 'image' ? 'sent an image ' : 'sent a file ' }));
      const link = element('a', { href: '#', className: 'download', textContent: 'Download' });
      link.addEventListener('click', (event) => { event.preventDefault(); download(message, item); });
      item.append(link);
      if (message.fileType === 'image') preview(message, item);
    } else {
      item.append(element('span', { className: 'text', textContent: message.text }));
    }
    if (message.edited) item.append(element('span', { className: 'edited', textContent: '(edited)' }));
    item.append(element('span', { className: 'time', textContent: String(message.time || '').slice(11, 16) }));
    if (message.seq) item.append(element('span', { className: 'seq', textContent: `#${message.seq}` }));
    return item;
  }

  async function preview(message, item) {
    try {
      const { blob } = await fetchFile(message.fileUrl);
      item.append(element('img', { className: 'preview', src: URL.createObjectURL(blob), alt: '' }));
    } catch (error) { /* the Download link still reports the failure */ }
  }

  function button(text, action, onClick) {
    const node = element('button', { type: 'button', textContent: text });
    node.dataset.action = action;
    node.addEventListener('click', onClick);
    return node;
  }

  function renderPeople() {
    $('people').replaceChildren(...[...state.names].map(([id, name]) => {
      const where = state.online.get(id) || 'offline';
      const item = element('li', {}, `${name}${id === state.me.id ? ' (you)' : ''} `,
        element('span', { className: 'where', textContent: describeLocation(where) }));
      item.dataset.user = String(id);
      item.dataset.online = String(where !== 'offline');
      return item;
    }));
  }

  function describeLocation(where) {  // presence locations: home, r-<room>, c-<channel>, com<C>,c-<voice>
    if (where === 'offline' || where === 'online' || where === 'home') return where;
    if (where.endsWith(`c-${state.voiceChannel}`)) return 'in voice';
    if (where.startsWith('r-')) return 'in a DM';
    const room = state.rooms.find((r) => where === r.key);
    return room ? 'in ' + room.title : 'online';
  }

  function renderVoice() {
    $('voice-members').replaceChildren(...state.voice.map((id) => {
      const item = element('li', { textContent: state.names.get(id) || String(id) });
      item.dataset.user = String(id);
      return item;
    }));
  }

  let typingHide = null;
  function showTyping(name) {
    $('typing').textContent = `${name} is typing…`;
    clearTimeout(typingHide);
    typingHide = setTimeout(() => { $('typing').textContent = ''; }, TYPING_SHOWN_MS);
  }

  function setStatus(value) {
    $('status').dataset.state = value;
    $('status').textContent = value;
    $('drop').textContent = value === 'offline' && state.token ? 'Reconnect' : 'Drop connection';
  }

  function showError(text) {
    $('errors').textContent = text;
  }

  // -- start -----------------------------------------------------------------------------------

  async function start(userId) {
    const session = await call('POST', '/demo/session', { userId });
    state.token = session.token;
    state.me = session.user;
    state.community = session.community;
    state.voiceChannel = session.voiceChannel;
    state.names = new Map(session.users.map((user) => [user.id, user.name]));
    state.rooms = session.rooms.map((r) => ({
      key: `r-${r.room}`, kind: 'direct', id: r.room, title: state.names.get(r.peer), destination: `/topic/direct/${r.room}`,
    }));
    state.rooms.push({ key: `c-${session.textChannel}`, kind: 'channel', id: session.textChannel, title: '# general',
                       destination: `/topic/group/${session.textChannel}` });
    $('login').hidden = true;
    for (const id of ['text', 'send', 'file', 'drop', 'join-voice']) $(id).disabled = false;
    document.title = `Smooth demo: ${state.me.name}`;
    connect();
  }

  function toggleConnection() {
    if (state.client.active) {
      state.client.deactivate().then(() => setStatus('offline'));
    } else {
      state.client.activate();
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login').addEventListener('submit', (event) => { event.preventDefault(); start(Number($('user').value)); });
    $('composer').addEventListener('submit', submit);
    $('text').addEventListener('input', typing);
    $('file').addEventListener('change', upload);
    $('cancel').addEventListener('click', () => { $('text').value = ''; setMode(null); });
    $('older').addEventListener('click', () => {
      const oldest = [...roomMessages(state.current).values()].sort((a, b) => (a.seq || 0) - (b.seq || 0))[0];
      loadHistory(state.current, oldest && oldest.id);
    });
    $('drop').addEventListener('click', toggleConnection);
    $('join-voice').addEventListener('click', () => send('signaling', {
      community_id: state.community, channel_id: `c-${state.voiceChannel}` }));
    if (params.get('user')) start(Number(params.get('user'))).catch((error) => showError(error.message));
  });
})();
