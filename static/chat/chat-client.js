/**
 * ChatClient: the browser's end of the chat socket (PROTOCOL.md, version 1).
 *
 * It keeps the public API of the WebSocket guide's class (section 5.2): connect, on, send,
 * sendMessage, sendTyping, joinRoom, leaveRoom, close, onMessage, onMaxReconnectReached. What it
 * adds is what a chat needs to lose nothing and show nothing twice:
 *
 * - an outbox: every chat message stays queued (and in sessionStorage, across a reload) until
 *   the server's `ack` for its messageId; after a reconnect it is sent again, which is safe
 *   because the server dedupes by messageId;
 * - `rate_limited` is waited out for its `extra.retryAfterMs`, then the outbox goes on;
 * - rooms the page has loaded are resumed after a reconnect with `since` and `changesSince`;
 * - a jump in a room's `seq` is a dropped event: the missing messages come from REST (`after=`);
 * - reconnects back off exponentially with jitter, up to a cap, and never stop while the page is
 *   open; going back online or showing the tab retries at once;
 * - close codes 4401 and 4403 mean "log in again": no retry loop, the login page instead.
 *
 * Everything the browser provides (WebSocket, fetch, timers, storage, events) may be injected
 * through `options`, so Node's test runner can drive the class against a fake socket.
 */

export const MessageTypes = Object.freeze({
  CONNECT: "connect",
  DISCONNECT: "disconnect",
  ERROR: "error",
  MESSAGE: "message",
  TYPING: "typing",
  JOIN_ROOM: "join_room",
  LEAVE_ROOM: "leave_room",
  USER_LIST: "user_list",
  FILE_START: "file_start",
  FILE_CHUNK: "file_chunk",
  FILE_END: "file_end",
});

/** Close codes after which reconnecting is pointless: the user must log in again. */
export const AUTH_CLOSE_CODES = new Set([4401, 4403]);

const OPEN = 1; // WebSocket.OPEN, spelled out so that a fake socket needs no constants
const CONNECTING = 0;
// Frames that are worthless once late: never queued while the socket is down.
const EPHEMERAL_TYPES = new Set(["typing", "ping"]);
// REST pages are capped at 200 by the server (PROTOCOL.md section 8).
const FILL_PAGE = 200;
const MAX_FILL_PAGES = 50;

export class ChatClient {
  /**
   * @param {string} serverUrl ws[s]://host/ws/chat/ (a path is resolved against the page's host)
   * @param {string|number|null} userId sent as `from` / `userId`, as the guide does (optional)
   * @param {object} [options] injectable dependencies and tuning, see below
   */
  constructor(serverUrl, userId = null, options = {}) {
    const g = globalThis;
    this.serverUrl = serverUrl;
    this.userId = userId;
    this.WebSocketImpl = options.WebSocket ?? g.WebSocket;
    this.fetchImpl = options.fetch ?? (typeof g.fetch === "function" ? g.fetch.bind(g) : null);
    this.setTimer = options.setTimeout ?? g.setTimeout.bind(g);
    this.clearTimer = options.clearTimeout ?? g.clearTimeout.bind(g);
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.storage = options.storage === undefined ? safeSessionStorage() : options.storage;
    this.eventTarget = options.eventTarget === undefined ? g.window ?? null : options.eventTarget;
    this.documentRef = options.document === undefined ? g.document ?? null : options.document;
    this.apiBase = options.apiBase ?? "/api";
    this.loginUrl = options.loginUrl ?? "/accounts/login/";
    if (options.onAuthFailure) this.onAuthFailure = options.onAuthFailure;

    // The guide's fields, kept with their meaning.
    this.ws = null;
    this.messageHandlers = new Map(); // type -> Set of handlers
    this.messageQueue = []; // non-chat frames sent while the socket was down
    this.isConnected = false;
    this.reconnectAttempts = 0;
    // After this many failed attempts the guide gave up; we only tell (onMaxReconnectReached)
    // and keep trying at the capped delay, because a chat tab is left open for hours.
    this.maxReconnectAttempts = options.maxReconnectAttempts ?? 5;
    this.reconnectDelay = options.reconnectDelay ?? 1000;
    this.maxReconnectDelay = options.maxReconnectDelay ?? 30000;

    this.ackTimeout = options.ackTimeout ?? 10000;
    this.pingInterval = options.pingInterval ?? 25000;
    this.pongTimeout = options.pongTimeout ?? 10000;

    this.outbox = []; // [{frame, inFlight, attempts, timer}] in send order
    this.rooms = new Map(); // slug -> room sync record (see _room)
    this.user = null;
    this.limits = null;
    this.state = "idle"; // idle | connecting | open | reconnecting | closed | unauthorized
    this.everWelcomed = false;
    this.closedByUser = false;
    this.pausedUntil = 0;
    this.lastFrameAt = 0;
    this._timers = { reconnect: null, pump: null, heartbeat: null };
    this._connectWaiters = [];
    this._restoreOutbox();
    this._listen();
  }

  // --- The guide's public API --------------------------------------------------------------

  /** Open the socket. Resolves at the first `welcome`; rejects only if the server refuses the
   * user (4401/4403) or close() is called first. Reconnects by itself after any other drop. */
  connect() {
    this.closedByUser = false;
    const promise = new Promise((resolve, reject) => {
      if (this.isConnected && this.everWelcomed) resolve();
      else this._connectWaiters.push({ resolve, reject });
    });
    this._open();
    return promise;
  }

  /** Schedule the next attempt (exponential back-off with jitter, capped; never gives up). */
  reconnect() {
    if (this.closedByUser || this.state === "unauthorized") return;
    this.reconnectAttempts += 1;
    if (this.reconnectAttempts === this.maxReconnectAttempts) this.onMaxReconnectReached();
    const delay = this.backoffDelay(this.reconnectAttempts);
    this._setState("reconnecting", { attempt: this.reconnectAttempts, delay });
    this._clearTimer("reconnect");
    this._timers.reconnect = this.setTimer(() => {
      this._timers.reconnect = null;
      this._open();
    }, delay);
  }

  /** Register a handler for a frame type (or a client event: state, outbox, message_failed,
   * message_changed). Unlike the guide's Map.set, several handlers may listen to one type.
   * Returns a function that removes the handler. */
  on(type, handler) {
    if (!this.messageHandlers.has(type)) this.messageHandlers.set(type, new Set());
    this.messageHandlers.get(type).add(handler);
    return () => this.messageHandlers.get(type)?.delete(handler);
  }

  /** Send a frame (object or JSON text). Chat messages go through the outbox; typing is
   * dropped while offline; joins are remembered and made on the next welcome; anything else is
   * queued and flushed on reconnect, as in the guide. */
  send(data) {
    let frame = data;
    if (typeof data === "string") {
      try {
        frame = JSON.parse(data);
      } catch {
        frame = null;
      }
      if (!frame || typeof frame !== "object") return this._rawSend(data, true);
    }
    switch (frame.type) {
      case "message":
        if (!frame.messageId) frame.messageId = this.generateMessageId();
        this.outbox.push({ frame, inFlight: false, attempts: 0, timer: null });
        this._saveOutbox();
        this._emit("outbox", this.pendingMessages());
        this._pump();
        return true;
      case "join_room":
        return this._join(frame.roomId, frame);
      case "leave_room":
        this.rooms.delete(frame.roomId);
        return this._rawSend(JSON.stringify(frame), true);
      default:
        return this._rawSend(JSON.stringify(frame), !EPHEMERAL_TYPES.has(frame.type));
    }
  }

  /** The guide's sendMessage, plus optional `extra` (e.g. {replyTo}). Returns the frame. */
  sendMessage(content, to = null, extra = undefined) {
    const message = {
      type: MessageTypes.MESSAGE,
      to,
      content,
      timestamp: this.now(),
      messageId: this.generateMessageId(),
    };
    if (this.userId != null) message.from = this.userId;
    if (extra) message.extra = extra;
    this.send(message);
    return message;
  }

  /** Tell the room this user types (state "start", the default) or stopped ("stop"). */
  sendTyping(to, state = "start") {
    const frame = { type: MessageTypes.TYPING, to, timestamp: this.now(), extra: { state } };
    if (this.userId != null) frame.from = this.userId;
    return this.send(frame);
  }

  /** Join (or re-subscribe to) a room; its history arrives as a `history` event. */
  joinRoom(roomId) {
    return this._join(roomId, null);
  }

  leaveRoom(roomId) {
    const frame = { type: MessageTypes.LEAVE_ROOM, roomId, timestamp: this.now() };
    if (this.userId != null) frame.userId = this.userId;
    return this.send(frame);
  }

  /** Close for good (the guide's close): no reconnect follows. */
  close() {
    this.closedByUser = true;
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    for (const item of this.outbox) this._clearItemTimer(item);
    this._unlisten();
    const ws = this.ws;
    this.ws = null;
    this.isConnected = false;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, "bye");
      } catch {
        // already closed
      }
    }
    this._setState("closed");
    this._rejectWaiters(new Error("closed"));
  }

  generateMessageId() {
    return `msg_${this.now()}_${Math.floor(this.random() * 2 ** 52).toString(36)}`;
  }

  /** Called with every frame received (the guide's hook); override or assign. */
  onMessage(_frame) {}

  /** Called once when reconnectAttempts reaches maxReconnectAttempts. Unlike the guide, the
   * client goes on trying (at the capped delay); a page may show that the outage is long. */
  onMaxReconnectReached() {}

  /** After 4401/4403: by default, go to the login page and come back here afterwards. */
  onAuthFailure(_code) {
    const loc = globalThis.location;
    if (!loc) return;
    // Slashes stay readable, as in Django's own ?next=/path/ redirects.
    const next = encodeURIComponent(loc.pathname + loc.search).replace(/%2F/g, "/");
    loc.assign(`${this.loginUrl}?next=${next}`);
  }

  // --- Further public helpers --------------------------------------------------------------

  /** Retry now if the socket is down (also done on `online` and when the tab shows). */
  retryNow() {
    if (this.closedByUser || this.state === "unauthorized" || this.state === "idle") return;
    if (this.ws && (this.ws.readyState === OPEN || this.ws.readyState === CONNECTING)) return;
    this._open();
  }

  markRead(room, seq) {
    return this.send({ type: "read", to: room, timestamp: this.now(), extra: { seq } });
  }

  editMessage(id, content) {
    return this.send({ type: "edit", content, timestamp: this.now(), extra: { id } });
  }

  deleteMessage(id) {
    return this.send({ type: "delete", timestamp: this.now(), extra: { id } });
  }

  /** Send only if the socket is open now; never queued (uploads resume their own way). */
  sendNow(frame) {
    if (!this.isOpen()) return false;
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    return true;
  }

  isOpen() {
    return Boolean(this.ws && this.isConnected && this.ws.readyState === OPEN && this.everWelcomedThisSocket);
  }

  /** Chat messages not yet acknowledged, oldest first (the page shows them as pending). */
  pendingMessages() {
    return this.outbox.map((item) => item.frame);
  }

  /** Drop a pending message (e.g. the user gave up on a failed one). */
  discardMessage(messageId) {
    const index = this.outbox.findIndex((item) => item.frame.messageId === messageId);
    if (index < 0) return false;
    this._clearItemTimer(this.outbox[index]);
    this.outbox.splice(index, 1);
    this._saveOutbox();
    this._emit("outbox", this.pendingMessages());
    this._pump();
    return true;
  }

  /** GET /api/rooms/{slug}/messages/ with before/after/changedAfter/limit: {results, hasMore}. */
  async fetchMessages(room, { before, after, changedAfter, limit } = {}) {
    const params = new URLSearchParams();
    if (before != null) params.set("before", String(before));
    if (after != null) params.set("after", String(after));
    if (changedAfter != null) params.set("changed_after", String(changedAfter));
    if (limit != null) params.set("limit", String(limit));
    const url = `${this.apiBase}/rooms/${encodeURIComponent(room)}/messages/?${params}`;
    if (!this.fetchImpl) throw new Error("no fetch available");
    const response = await this.fetchImpl(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401 || response.status === 403) {
      const error = new Error(`HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    return { results: Array.isArray(body.results) ? body.results : [], hasMore: Boolean(body.hasMore) };
  }

  /** The client's view of a room: {slug, synced, lastSeq, lastChange, ...} or undefined. */
  roomState(slug) {
    return this.rooms.get(slug);
  }

  backoffDelay(attempt) {
    // "Equal jitter": half the exponential step is fixed, half random, so that a server
    // restart is not met by every tab at the same instant, yet no attempt comes too early.
    const step = Math.min(this.maxReconnectDelay, this.reconnectDelay * 2 ** Math.max(0, attempt - 1));
    return Math.round(step / 2 + (this.random() * step) / 2);
  }

  // --- Connection --------------------------------------------------------------------------

  _url() {
    const url = this.serverUrl;
    if (/^wss?:\/\//.test(url)) return url;
    const loc = globalThis.location;
    if (!loc) return url;
    const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${loc.host}${url.startsWith("/") ? "" : "/"}${url}`;
  }

  _open() {
    if (this.closedByUser || this.state === "unauthorized") return;
    this._clearTimer("reconnect");
    if (this.ws && (this.ws.readyState === OPEN || this.ws.readyState === CONNECTING)) return;
    this._setState(this.everWelcomed ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new this.WebSocketImpl(this._url());
    } catch {
      this.reconnect();
      return;
    }
    this.ws = ws;
    this.everWelcomedThisSocket = false;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.isConnected = true;
      this.lastFrameAt = this.now();
    };
    ws.onmessage = (event) => {
      if (ws === this.ws) this.handleMessage(event.data);
    };
    ws.onclose = (event) => this._onClose(ws, event?.code ?? 1006);
    ws.onerror = () => {
      // A close event always follows; the decision is taken there.
    };
  }

  _onClose(ws, code) {
    if (ws !== this.ws) return;
    detach(ws);
    this.ws = null;
    this.isConnected = false;
    this.everWelcomedThisSocket = false;
    this._clearTimer("heartbeat");
    this._clearTimer("pump");
    for (const item of this.outbox) {
      this._clearItemTimer(item);
      item.inFlight = false;
    }
    for (const room of this.rooms.values()) {
      // A join in progress is redone (with since, if the room was loaded) on the next welcome.
      if (room.join) room.wantJoin = true;
      room.join = null;
    }
    this._emit("close", { code });
    if (this.closedByUser) return;
    if (AUTH_CLOSE_CODES.has(code)) {
      this._setState("unauthorized", { code });
      this._rejectWaiters(Object.assign(new Error(`closed with ${code}`), { code }));
      this.onAuthFailure(code);
      return;
    }
    this.reconnect();
  }

  _listen() {
    this._onOnline = () => this.retryNow();
    this._onVisible = () => {
      if (this.documentRef?.visibilityState === "visible") this.retryNow();
    };
    this.eventTarget?.addEventListener?.("online", this._onOnline);
    this.documentRef?.addEventListener?.("visibilitychange", this._onVisible);
  }

  _unlisten() {
    this.eventTarget?.removeEventListener?.("online", this._onOnline);
    this.documentRef?.removeEventListener?.("visibilitychange", this._onVisible);
  }

  _heartbeat() {
    // The server pings at the WebSocket level, but a browser cannot see those; an
    // application ping finds a half-open connection (e.g. after a laptop sleeps).
    this._clearTimer("heartbeat");
    const ws = this.ws;
    if (!ws || !this.isConnected) return;
    const silent = this.now() - this.lastFrameAt;
    let wait;
    if (silent >= this.pingInterval + this.pongTimeout) {
      try {
        ws.close(4000, "no pong");
      } catch {
        // ignore
      }
      this._onClose(ws, 4000);
      return;
    }
    if (silent >= this.pingInterval) {
      if (!(this._pingSentAt > this.lastFrameAt)) {
        this._pingSentAt = this.now();
        this._rawSend('{"type":"ping"}', false);
      }
      wait = this.pingInterval + this.pongTimeout - silent;
    } else {
      wait = this.pingInterval - silent;
    }
    this._timers.heartbeat = this.setTimer(() => {
      this._timers.heartbeat = null;
      this._heartbeat();
    }, wait);
  }

  _rawSend(text, queueIfDown) {
    if (this.ws && this.ws.readyState === OPEN && this.isConnected) {
      this.ws.send(text);
      return true;
    }
    if (queueIfDown) this.messageQueue.push(text);
    return false;
  }

  flushMessageQueue() {
    while (this.messageQueue.length > 0 && this.ws && this.ws.readyState === OPEN) {
      this.ws.send(this.messageQueue.shift());
    }
  }

  _setState(state, detail = {}) {
    const changed = state !== this.state;
    this.state = state;
    if (changed || state === "reconnecting") this._emit("state", { state, ...detail });
  }

  _rejectWaiters(error) {
    const waiters = this._connectWaiters.splice(0);
    for (const waiter of waiters) waiter.reject(error);
  }

  _clearTimer(name) {
    if (this._timers[name] != null) {
      this.clearTimer(this._timers[name]);
      this._timers[name] = null;
    }
  }

  // --- Frames in ---------------------------------------------------------------------------

  /** Parse and dispatch one frame (the guide's method, with the bookkeeping added). */
  handleMessage(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    this.lastFrameAt = this.now();
    switch (frame.type) {
      case "welcome":
        this._onWelcome(frame);
        break;
      case "room_state":
        this._onRoomState(frame);
        break;
      case "history":
        this._onHistory(frame);
        break;
      case "message":
        this._onLiveMessage(frame);
        break;
      case "ack":
        this._onAck(frame);
        break;
      case "error":
        this._onError(frame);
        break;
      case "message_updated":
      case "message_deleted":
        this._onChange(frame);
        break;
      case "room_added":
        this._room(frame.room);
        this._emit(frame.type, frame);
        break;
      case "room_removed":
        this.rooms.delete(frame.room);
        this._emit(frame.type, frame);
        break;
      default:
        this._emit(frame.type, frame);
    }
    try {
      this.onMessage(frame);
    } catch (error) {
      reportError(error);
    }
  }

  _onWelcome(frame) {
    const first = !this.everWelcomed;
    this.everWelcomed = true;
    this.everWelcomedThisSocket = true;
    this.reconnectAttempts = 0;
    this.user = frame.extra?.user ?? this.user;
    this.limits = frame.extra?.limits ?? this.limits;
    for (const summary of frame.extra?.rooms ?? []) {
      const room = this._room(summary.room);
      // Loaded rooms keep their own position (they resume from it); the others just follow.
      if (!room.synced) room.lastSeq = summary.lastSeq ?? room.lastSeq;
    }
    this._setState("open");
    this._emit("welcome", { ...frame, reconnect: !first });
    for (const room of this.rooms.values()) {
      if (room.synced || room.wantJoin) this._sendJoin(room);
    }
    this.flushMessageQueue();
    this._pump();
    this._heartbeat();
    const waiters = this._connectWaiters.splice(0);
    for (const waiter of waiters) waiter.resolve();
  }

  _onRoomState(frame) {
    const room = this._room(frame.room);
    if (room.join) room.join.state = frame.extra ?? {};
    this._emit("room_state", frame);
  }

  _onHistory(frame) {
    const room = this._room(frame.room);
    const join = room.join ?? { since: room.synced ? room.lastSeq : null, state: null };
    room.join = null;
    room.wantJoin = false;
    const messages = frame.extra?.messages ?? [];
    const changes = frame.extra?.changes ?? [];
    if (join.since == null) {
      // A fresh load: the page replaces what it shows of this room.
      room.synced = true;
      room.lastSeq = messages.length ? messages[messages.length - 1].seq : join.state?.lastSeq ?? 0;
      room.lastChange = join.state?.lastChange ?? room.lastChange;
      room.hasOlder = Boolean(frame.extra?.hasMore);
      this._emit("history", frame);
    } else {
      for (const message of messages) this._deliver(room, message);
      this._applyChanges(room, changes, join.state?.lastChange, frame.extra?.changesHasMore);
      if (frame.extra?.hasMore) {
        // The replay holds at most 200: the rest comes through REST `after=`.
        this._fillGap(room);
        return;
      }
    }
    this._flushBuffer(room);
  }

  _onLiveMessage(frame) {
    if (!frame.room || typeof frame.seq !== "number") {
      this._emit("message", frame);
      return;
    }
    this._deliver(this._room(frame.room), frame);
  }

  /** Hand a message to the page exactly once and in seq order (loaded rooms), or buffer it
   * while a join or a gap fill is running. */
  _deliver(room, message) {
    if (room.join || room.filling) {
      room.buffer.push(message);
      return;
    }
    if (!room.synced) {
      room.lastSeq = Math.max(room.lastSeq, message.seq);
      this._emit("message", message);
      return;
    }
    if (message.seq <= room.lastSeq) return; // already shown (live frame raced the history)
    if (message.seq > room.lastSeq + 1) {
      room.buffer.push(message);
      this._fillGap(room);
      return;
    }
    room.lastSeq = message.seq;
    this._emit("message", message);
  }

  _flushBuffer(room) {
    const buffered = room.buffer.splice(0).sort((a, b) => a.seq - b.seq);
    for (let i = 0; i < buffered.length; i += 1) {
      this._deliver(room, buffered[i]);
      if (room.filling) {
        room.buffer.push(...buffered.slice(i + 1));
        return;
      }
    }
  }

  /** Fetch what lies between the room's lastSeq and now through REST (PROTOCOL.md 7). */
  async _fillGap(room) {
    if (room.filling) return;
    room.filling = true;
    const before = room.lastSeq;
    try {
      for (let page = 0; page < MAX_FILL_PAGES; page += 1) {
        const { results, hasMore } = await this.fetchMessages(room.slug, { after: room.lastSeq, limit: FILL_PAGE });
        if (this.rooms.get(room.slug) !== room) return; // left meanwhile
        for (const message of results) {
          if (message.seq > room.lastSeq) {
            room.lastSeq = message.seq;
            this._emit("message", message);
          }
        }
        if (!hasMore || results.length === 0) break;
      }
    } catch {
      // REST failed: fall back to a socket replay (or the next welcome's, if the socket is down).
      room.filling = false;
      if (this.isOpen()) this._sendJoin(room);
      else room.wantJoin = true;
      return;
    }
    room.filling = false;
    if (room.lastSeq === before && room.buffer.some((m) => m.seq > room.lastSeq + 1)) {
      // The server could not fill the gap (it should never happen: seq is gap-free); accept it
      // rather than stall the room.
      room.lastSeq = Math.min(...room.buffer.map((m) => m.seq)) - 1;
    }
    this._flushBuffer(room);
  }

  _onChange(frame) {
    const room = this.rooms.get(frame.room);
    const change = frame.extra?.change;
    if (room?.synced && typeof change === "number") {
      if (change <= room.lastChange) return; // already applied
      if (change > room.lastChange + 1) {
        this._fillChanges(room, change);
      } else {
        room.lastChange = change;
      }
    }
    this._emit(frame.type, frame);
  }

  /** A change number was skipped (a dropped event): fetch what changed since through REST. */
  async _fillChanges(room, seen) {
    const from = room.lastChange;
    room.lastChange = Math.max(room.lastChange, seen);
    try {
      const { results, hasMore } = await this.fetchMessages(room.slug, { changedAfter: from, limit: FILL_PAGE });
      for (const message of results) this._emit("message_changed", message);
      if (hasMore) this._reload(room);
    } catch {
      room.lastChange = from; // the next resume's changesSince brings them
    }
  }

  _applyChanges(room, changes, serverLastChange, more) {
    for (const message of changes) this._emit("message_changed", message);
    if (more || (more === undefined && changes.length >= FILL_PAGE)) {
      // More changes than one replay holds, and a message does not say which change number
      // it carries, so they cannot be paged: load the room afresh instead.
      this._reload(room);
      return;
    }
    room.lastChange = Math.max(room.lastChange, serverLastChange ?? 0);
  }

  /** Forget a room's position and load it again (the page gets a new `history`). */
  _reload(room) {
    room.synced = false;
    room.buffer = [];
    room.lastChange = 0;
    if (this.isOpen()) this._sendJoin(room);
    else room.wantJoin = true;
  }

  _onAck(frame) {
    const index = this.outbox.findIndex((item) => item.frame.messageId === frame.messageId);
    if (index >= 0) {
      this._clearItemTimer(this.outbox[index]);
      this.outbox.splice(index, 1);
      this._saveOutbox();
    }
    this._emit("ack", frame);
    if (index >= 0) this._emit("outbox", this.pendingMessages());
    const room = frame.room ? this.rooms.get(frame.room) : null;
    if (room?.synced && typeof frame.seq === "number") {
      // Our own message frame should follow the ack; if the layer dropped it, fetch it.
      this.setTimer(() => {
        if (this.rooms.get(room.slug) === room && room.lastSeq < frame.seq && !room.join) this._fillGap(room);
      }, 3000);
    }
    this._pump();
  }

  _onError(frame) {
    const index = frame.messageId
      ? this.outbox.findIndex((item) => item.frame.messageId === frame.messageId)
      : -1;
    if (index >= 0) this._outboxRefused(index, frame);
    if (frame.extra?.requestType === "join_room" && frame.room) {
      const room = this.rooms.get(frame.room);
      if (room) {
        room.join = null;
        room.wantJoin = false;
        if (!room.synced) this.rooms.delete(frame.room);
        else this._flushBuffer(room);
      }
    }
    this._emit("error", frame);
  }

  _outboxRefused(index, frame) {
    const item = this.outbox[index];
    const code = frame.extra?.code;
    this._clearItemTimer(item);
    item.inFlight = false;
    if (code === "rate_limited") {
      // Wait exactly as long as the server asks; the message keeps its place in line.
      const wait = Number(frame.extra?.retryAfterMs) || 1000;
      this.pausedUntil = Math.max(this.pausedUntil, this.now() + wait);
      this._pump();
      return;
    }
    if (code === "server_error" && item.attempts < 3) {
      this.pausedUntil = Math.max(this.pausedUntil, this.now() + 1000 * item.attempts);
      this._pump();
      return;
    }
    this.outbox.splice(index, 1);
    this._saveOutbox();
    this._emit("message_failed", { message: item.frame, error: frame });
    this._emit("outbox", this.pendingMessages());
    this._pump();
  }

  // --- Outbox ------------------------------------------------------------------------------

  /** Send the oldest unacknowledged message; one at a time, so that order is kept even when
   * the server refuses one (rate limit) and the next would have passed. */
  _pump() {
    this._clearTimer("pump");
    if (!this.isOpen()) return;
    const head = this.outbox[0];
    if (!head || head.inFlight) return;
    const wait = this.pausedUntil - this.now();
    if (wait > 0) {
      this._timers.pump = this.setTimer(() => {
        this._timers.pump = null;
        this._pump();
      }, wait);
      return;
    }
    head.inFlight = true;
    head.attempts += 1;
    this.ws.send(JSON.stringify(head.frame));
    // No ack in time: send it again (the server answers a repeat with the first ack).
    head.timer = this.setTimer(() => {
      head.timer = null;
      head.inFlight = false;
      this._pump();
    }, this.ackTimeout);
  }

  _clearItemTimer(item) {
    if (item.timer != null) {
      this.clearTimer(item.timer);
      item.timer = null;
    }
  }

  _storageKey() {
    return `chat-outbox:${this.userId ?? "anonymous"}`;
  }

  _saveOutbox() {
    if (!this.storage) return;
    try {
      if (this.outbox.length) this.storage.setItem(this._storageKey(), JSON.stringify(this.pendingMessages()));
      else this.storage.removeItem(this._storageKey());
    } catch {
      // Storage full or denied: the outbox still lives in memory.
    }
  }

  _restoreOutbox() {
    if (!this.storage) return;
    try {
      const saved = JSON.parse(this.storage.getItem(this._storageKey()) || "[]");
      for (const frame of Array.isArray(saved) ? saved : []) {
        if (frame && frame.type === "message" && frame.messageId) {
          this.outbox.push({ frame, inFlight: false, attempts: 0, timer: null });
        }
      }
    } catch {
      // A corrupt entry is dropped.
    }
  }

  // --- Rooms -------------------------------------------------------------------------------

  _room(slug) {
    let room = this.rooms.get(slug);
    if (!room) {
      room = {
        slug,
        synced: false, // the page has loaded it: resume it and keep its seq gap-free
        lastSeq: 0,
        lastChange: 0,
        join: null, // {since, state} while a join_room is answered
        wantJoin: false,
        filling: false,
        hasOlder: false,
        buffer: [],
      };
      this.rooms.set(slug, room);
    }
    return room;
  }

  _join(roomId, frame) {
    if (!roomId) return false;
    const room = this._room(roomId);
    if (frame && frame.since != null && !room.synced) {
      // The caller resumes from its own position: trust it.
      room.synced = true;
      room.lastSeq = frame.since;
      room.lastChange = frame.changesSince ?? 0;
    }
    room.wantJoin = true;
    if (!this.isOpen()) return false;
    this._sendJoin(room);
    return true;
  }

  _sendJoin(room) {
    const frame = { type: MessageTypes.JOIN_ROOM, roomId: room.slug, timestamp: this.now() };
    if (this.userId != null) frame.userId = this.userId;
    if (room.synced) {
      frame.since = room.lastSeq;
      frame.changesSince = room.lastChange;
    }
    room.join = { since: room.synced ? room.lastSeq : null, state: null };
    room.wantJoin = false;
    this.ws.send(JSON.stringify(frame));
  }

  // --- Events ------------------------------------------------------------------------------

  _emit(type, payload) {
    const handlers = this.messageHandlers.get(type);
    if (!handlers) return;
    for (const handler of [...handlers]) {
      try {
        handler(payload);
      } catch (error) {
        // One broken handler must not stop the client's own bookkeeping.
        reportError(error);
      }
    }
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}

function safeSessionStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // denied (privacy settings)
  }
}

function reportError(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else globalThis.console?.error(error);
}

export default ChatClient;
