// Test doubles for ChatClient: a fake WebSocket the test drives by hand, a fake clock, a fake
// fetch answering REST history requests, and a memory storage.

import { ChatClient } from "../../static/chat/chat-client.js";

export class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.instances.push(this);
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }

  close(code = 1000) {
    this.closedWith = code;
    this.readyState = 3;
  }

  // --- driven by the test ---
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code });
  }

  sentOfType(type) {
    return this.sent.filter((frame) => frame.type === type);
  }

  static last() {
    return FakeSocket.instances[FakeSocket.instances.length - 1];
  }

  static reset() {
    FakeSocket.instances = [];
  }
}

/** Timers that run only when the test advances the clock. */
export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { fn, at: this.time + Math.max(0, ms) });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
    this.now = () => this.time;
  }

  /** The delays of pending timers, soonest first (relative to now). */
  pendingDelays() {
    return [...this.timers.values()].map((t) => t.at - this.time).sort((a, b) => a - b);
  }

  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }
}

export class MemoryStorage {
  constructor() {
    this.data = new Map();
  }
  getItem(key) {
    return this.data.has(key) ? this.data.get(key) : null;
  }
  setItem(key, value) {
    this.data.set(key, String(value));
  }
  removeItem(key) {
    this.data.delete(key);
  }
}

/** fetch() serving /api/rooms/{slug}/messages/?after=N from `store[slug]` (sorted messages). */
export function fakeFetch(store, calls = []) {
  return async (url) => {
    calls.push(url);
    const parsed = new URL(url, "http://test");
    const match = parsed.pathname.match(/^\/api\/rooms\/([^/]+)\/messages\/$/);
    if (!match) return { ok: false, status: 404, json: async () => ({}) };
    const all = store[decodeURIComponent(match[1])] ?? [];
    const limit = Number(parsed.searchParams.get("limit") || 50);
    let results;
    let hasMore;
    if (parsed.searchParams.has("after")) {
      const after = Number(parsed.searchParams.get("after"));
      const newer = all.filter((m) => m.seq > after);
      results = newer.slice(0, limit);
      hasMore = newer.length > limit;
    } else if (parsed.searchParams.has("before")) {
      const before = Number(parsed.searchParams.get("before"));
      const older = all.filter((m) => m.seq < before);
      results = older.slice(-limit);
      hasMore = older.length > limit;
    } else if (parsed.searchParams.has("changed_after")) {
      const after = Number(parsed.searchParams.get("changed_after"));
      results = all.filter((m) => (m.extra?.change ?? 0) > after);
      hasMore = false;
    } else {
      results = all.slice(-limit);
      hasMore = all.length > limit;
    }
    return { ok: true, status: 200, json: async () => ({ results, hasMore }) };
  };
}

export function message(room, seq, fields = {}) {
  return {
    type: "message",
    id: 1000 + seq,
    seq,
    room,
    from: fields.from ?? "bob",
    content: fields.content ?? `message ${seq}`,
    timestamp: 1_700_000_000_000 + seq,
    messageId: fields.messageId ?? null,
    extra: { displayName: "Bob", kind: "text", replyTo: null, mentions: [], attachment: null, editedAt: null, deletedAt: null, ...(fields.extra ?? {}) },
  };
}

export function welcome(rooms = [{ room: "lobby", name: "Lobby", kind: "public", lastSeq: 0, lastChange: 0, readSeq: 0, unread: 0 }]) {
  return {
    type: "welcome",
    timestamp: 1,
    extra: {
      protocol: 1,
      user: { id: 1, username: "alice", displayName: "Alice" },
      rooms,
      limits: { maxContent: 4000, maxFrameBytes: 262144, maxUpload: 26214400, chunkSize: 65536 },
    },
  };
}

/** A client wired to fakes; returns everything a test needs. */
export function makeClient(options = {}) {
  FakeSocket.reset();
  const clock = new FakeClock();
  const store = options.store ?? {};
  const fetchCalls = [];
  const authFailures = [];
  const client = new ChatClient("ws://test/ws/chat/", "alice", {
    WebSocket: FakeSocket,
    fetch: fakeFetch(store, fetchCalls),
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: options.random ?? (() => 0.5),
    storage: options.storage ?? null,
    eventTarget: options.eventTarget ?? null,
    document: options.document ?? null,
    onAuthFailure: (code) => authFailures.push(code),
    ...(options.clientOptions ?? {}),
  });
  const events = [];
  for (const type of ["message", "history", "ack", "state", "message_failed", "message_changed", "outbox", "error"]) {
    client.on(type, (payload) => events.push({ type, payload }));
  }
  return { client, clock, store, fetchCalls, authFailures, events };
}

/** Connect and get past the welcome on a fresh fake socket. */
export function openWith(client, rooms) {
  const socket = FakeSocket.last();
  socket.open();
  socket.receive(welcome(rooms));
  return socket;
}

/** Let pending promise callbacks (the fake fetch) run. */
export async function settle() {
  for (let i = 0; i < 20; i += 1) await Promise.resolve();
  await new Promise((resolve) => setImmediate(resolve));
}
