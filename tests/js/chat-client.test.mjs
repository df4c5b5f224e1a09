// ChatClient against a fake WebSocket: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ChatClient } from "../../static/chat/chat-client.js";
import { FakeSocket, MemoryStorage, makeClient, message, openWith, settle, welcome } from "./helpers.mjs";

const LOBBY = [{ room: "lobby", name: "Lobby", kind: "public", lastSeq: 3, lastChange: 0, readSeq: 3, unread: 0 }];

/** Open, join the lobby and answer with room_state + history (seq 1..3). */
function joinedLobby(setup) {
  const { client } = setup;
  client.connect();
  const socket = openWith(client, LOBBY);
  client.joinRoom("lobby");
  socket.receive({ type: "room_state", room: "lobby", extra: { name: "Lobby", lastSeq: 3, lastChange: 0, readSeq: 3, role: "member" } });
  socket.receive({ type: "history", room: "lobby", extra: { messages: [message("lobby", 1), message("lobby", 2), message("lobby", 3)], hasMore: false, changes: [] } });
  return socket;
}

describe("public API of the guide's class", () => {
  it("has the guide's methods and hooks", () => {
    const { client } = makeClient();
    for (const name of ["connect", "on", "send", "sendMessage", "sendTyping", "joinRoom", "leaveRoom", "close", "onMessage", "onMaxReconnectReached"]) {
      assert.equal(typeof client[name], "function", name);
    }
    assert.ok(ChatClient.prototype.generateMessageId);
  });

  it("connect() resolves at the welcome and onMessage sees every frame", async () => {
    const { client } = makeClient();
    const seen = [];
    client.onMessage = (frame) => seen.push(frame.type);
    const connected = client.connect();
    openWith(client, LOBBY);
    await connected;
    assert.deepEqual(seen, ["welcome"]);
    assert.equal(client.isConnected, true);
  });

  it("sendMessage returns the guide's frame with a msg_ id and from", () => {
    const { client } = makeClient();
    client.connect();
    const socket = openWith(client, LOBBY);
    const frame = client.sendMessage("hi", "lobby");
    assert.match(frame.messageId, /^msg_\d+_[a-z0-9]+$/);
    assert.equal(frame.from, "alice");
    assert.deepEqual(socket.sentOfType("message").map((f) => f.content), ["hi"]);
  });

  it("on() handlers for one type all run, and can be removed", () => {
    const { client } = makeClient();
    const calls = [];
    const off = client.on("pong", () => calls.push("a"));
    client.on("pong", () => calls.push("b"));
    client.connect();
    const socket = openWith(client, LOBBY);
    socket.receive({ type: "pong", timestamp: 1 });
    off();
    socket.receive({ type: "pong", timestamp: 2 });
    assert.deepEqual(calls, ["a", "b", "b"]);
  });
});

describe("outbox", () => {
  it("keeps a message until its ack, sending one at a time", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    const first = setup.client.sendMessage("one", "lobby");
    const second = setup.client.sendMessage("two", "lobby");
    assert.deepEqual(socket.sentOfType("message").map((f) => f.content), ["one"]);
    assert.equal(setup.client.pendingMessages().length, 2);
    socket.receive({ type: "ack", messageId: first.messageId, id: 1004, seq: 4, room: "lobby", timestamp: 1 });
    assert.deepEqual(setup.client.pendingMessages().map((f) => f.messageId), [second.messageId]);
    assert.deepEqual(socket.sentOfType("message").map((f) => f.content), ["one", "two"]);
    socket.receive({ type: "ack", messageId: second.messageId, id: 1005, seq: 5, room: "lobby", timestamp: 1 });
    assert.equal(setup.client.pendingMessages().length, 0);
  });

  it("queues while offline and re-sends unacknowledged messages after a reconnect", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    const lost = setup.client.sendMessage("in flight when the socket dropped", "lobby");
    socket.drop(1006);
    const offline = setup.client.sendMessage("written while offline", "lobby");
    assert.equal(setup.client.pendingMessages().length, 2);

    setup.clock.advance(60_000); // the reconnect timer fires
    const next = FakeSocket.last();
    assert.notEqual(next, socket);
    next.open();
    assert.equal(next.sentOfType("message").length, 0, "nothing is sent before the welcome");
    next.receive(welcome(LOBBY));
    // Same messageId again: the server answers a repeat with the first ack.
    assert.deepEqual(next.sentOfType("message").map((f) => f.messageId), [lost.messageId]);
    next.receive({ type: "ack", messageId: lost.messageId, id: 1004, seq: 4, room: "lobby", timestamp: 1 });
    assert.deepEqual(next.sentOfType("message").map((f) => f.messageId), [lost.messageId, offline.messageId]);
    next.receive({ type: "ack", messageId: offline.messageId, id: 1005, seq: 5, room: "lobby", timestamp: 1 });
    assert.equal(setup.client.pendingMessages().length, 0);
  });

  it("re-sends when no ack comes in time", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    const frame = setup.client.sendMessage("hello?", "lobby");
    setup.clock.advance(10_000);
    assert.deepEqual(socket.sentOfType("message").map((f) => f.messageId), [frame.messageId, frame.messageId]);
  });

  it("waits out rate_limited for retryAfterMs, keeping the order", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    const first = setup.client.sendMessage("one", "lobby");
    setup.client.sendMessage("two", "lobby");
    socket.receive({
      type: "error",
      messageId: first.messageId,
      content: "you are sending too fast",
      extra: { code: "rate_limited", requestType: "message", retryAfterMs: 1500 },
    });
    assert.equal(socket.sentOfType("message").length, 1);
    setup.clock.advance(1499);
    assert.equal(socket.sentOfType("message").length, 1, "not before retryAfterMs");
    setup.clock.advance(1);
    assert.deepEqual(socket.sentOfType("message").map((f) => f.content), ["one", "one"]);
    assert.equal(setup.client.pendingMessages().length, 2);
  });

  it("gives up on a message the server refuses for good and goes on", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    const bad = setup.client.sendMessage("x".repeat(5000), "lobby");
    setup.client.sendMessage("fine", "lobby");
    socket.receive({ type: "error", messageId: bad.messageId, content: "too long", extra: { code: "invalid", requestType: "message" } });
    const failed = setup.events.filter((e) => e.type === "message_failed");
    assert.equal(failed.length, 1);
    assert.equal(failed[0].payload.message.messageId, bad.messageId);
    assert.deepEqual(socket.sentOfType("message").map((f) => f.content.length), [5000, 4]);
  });

  it("survives a reload through storage", () => {
    const storage = new MemoryStorage();
    const setup = makeClient({ storage });
    setup.client.connect();
    const frame = setup.client.sendMessage("kept", "lobby");
    const again = makeClient({ storage });
    assert.deepEqual(again.client.pendingMessages().map((f) => f.messageId), [frame.messageId]);
    again.client.connect();
    const socket = openWith(again.client, LOBBY);
    assert.deepEqual(socket.sentOfType("message").map((f) => f.content), ["kept"]);
    socket.receive({ type: "ack", messageId: frame.messageId, id: 1, seq: 1, room: "lobby", timestamp: 1 });
    assert.equal(storage.getItem("chat-outbox:alice"), null);
  });

  it("does not queue typing while offline", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    socket.drop(1006);
    setup.client.sendTyping("lobby");
    setup.clock.advance(60_000);
    const next = FakeSocket.last();
    next.open();
    next.receive(welcome(LOBBY));
    assert.equal(next.sentOfType("typing").length, 0);
  });
});

describe("resume and gaps", () => {
  it("re-joins loaded rooms with since and changesSince after a reconnect", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    socket.receive(message("lobby", 4));
    socket.receive({ type: "message_updated", room: "lobby", extra: { id: 1002, seq: 2, change: 1, content: "edited", editedAt: 5 } });
    socket.drop(4503);
    setup.clock.advance(60_000);
    const next = FakeSocket.last();
    next.open();
    next.receive(welcome(LOBBY));
    const joins = next.sentOfType("join_room");
    assert.equal(joins.length, 1);
    assert.deepEqual({ roomId: joins[0].roomId, since: joins[0].since, changesSince: joins[0].changesSince }, { roomId: "lobby", since: 4, changesSince: 1 });
    // The replay: seq 5 and 6 were sent meanwhile; a live seq 6 races ahead of it.
    next.receive(message("lobby", 6));
    next.receive({ type: "room_state", room: "lobby", extra: { lastSeq: 6, lastChange: 2 } });
    next.receive({
      type: "history",
      room: "lobby",
      extra: { messages: [message("lobby", 5), message("lobby", 6)], hasMore: false, changes: [message("lobby", 3, { content: "", extra: { deletedAt: 9, change: 2 } })] },
    });
    const delivered = setup.events.filter((e) => e.type === "message").map((e) => e.payload.seq);
    assert.deepEqual(delivered, [4, 5, 6], "each seq once, in order");
    assert.equal(setup.events.filter((e) => e.type === "message_changed").length, 1);
    assert.equal(setup.client.roomState("lobby").lastChange, 2);
  });

  it("a seq gap fetches the missing messages through REST after=", async () => {
    const store = { lobby: [1, 2, 3, 4, 5, 6].map((seq) => message("lobby", seq)) };
    const setup = makeClient({ store });
    const socket = joinedLobby(setup);
    socket.receive(message("lobby", 6)); // 4 and 5 were dropped
    await settle();
    assert.equal(setup.fetchCalls.length, 1);
    assert.match(setup.fetchCalls[0], /\/api\/rooms\/lobby\/messages\/\?after=3&limit=200$/);
    const delivered = setup.events.filter((e) => e.type === "message").map((e) => e.payload.seq);
    assert.deepEqual(delivered, [4, 5, 6]);
    socket.receive(message("lobby", 7));
    assert.deepEqual(setup.events.filter((e) => e.type === "message").map((e) => e.payload.seq), [4, 5, 6, 7]);
  });

  it("more changes than one replay holds: the room is loaded afresh", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    socket.drop(4503);
    setup.clock.advance(60_000);
    const next = FakeSocket.last();
    next.open();
    next.receive(welcome(LOBBY));
    next.receive({ type: "room_state", room: "lobby", extra: { lastSeq: 3, lastChange: 900 } });
    next.receive({ type: "history", room: "lobby", extra: { messages: [], hasMore: false, changes: [message("lobby", 1)], changesHasMore: true } });
    const joins = next.sentOfType("join_room");
    assert.equal(joins.length, 2);
    assert.equal(joins[1].since, undefined, "a fresh join, without since");
    next.receive({ type: "room_state", room: "lobby", extra: { lastSeq: 3, lastChange: 900 } });
    next.receive({ type: "history", room: "lobby", extra: { messages: [message("lobby", 3)], hasMore: true, changes: [] } });
    assert.equal(setup.events.filter((e) => e.type === "history").length, 2);
    assert.equal(setup.client.roomState("lobby").lastChange, 900);
  });

  it("live messages during a first join wait for its history", () => {
    const setup = makeClient();
    setup.client.connect();
    const socket = openWith(setup.client, LOBBY);
    setup.client.joinRoom("lobby");
    socket.receive(message("lobby", 4));
    assert.equal(setup.events.filter((e) => e.type === "message").length, 0);
    socket.receive({ type: "room_state", room: "lobby", extra: { lastSeq: 4, lastChange: 0 } });
    socket.receive({ type: "history", room: "lobby", extra: { messages: [message("lobby", 3), message("lobby", 4)], hasMore: true, changes: [] } });
    assert.equal(setup.events.filter((e) => e.type === "message").length, 0, "seq 4 came with the history");
    socket.receive(message("lobby", 5));
    assert.deepEqual(setup.events.filter((e) => e.type === "message").map((e) => e.payload.seq), [5]);
  });

  it("drops a duplicate seq", () => {
    const setup = makeClient();
    const socket = joinedLobby(setup);
    socket.receive(message("lobby", 4));
    socket.receive(message("lobby", 4));
    socket.receive(message("lobby", 2));
    assert.deepEqual(setup.events.filter((e) => e.type === "message").map((e) => e.payload.seq), [4]);
  });

  it("falls back to a socket replay when REST fails", async () => {
    const setup = makeClient({ clientOptions: { fetch: async () => ({ ok: false, status: 500, json: async () => ({}) }) } });
    const socket = joinedLobby(setup);
    socket.receive(message("lobby", 9));
    await settle();
    const joins = socket.sentOfType("join_room");
    assert.equal(joins.at(-1).since, 3);
  });

  it("history of a first join replaces, then live messages continue from it", () => {
    const setup = makeClient();
    joinedLobby(setup);
    const history = setup.events.filter((e) => e.type === "history");
    assert.equal(history.length, 1);
    assert.equal(setup.client.roomState("lobby").lastSeq, 3);
  });
});

describe("reconnecting", () => {
  it("backs off exponentially with jitter up to a cap, and never gives up", () => {
    let maxReached = 0;
    const setup = makeClient({ random: () => 1 });
    setup.client.onMaxReconnectReached = () => (maxReached += 1);
    setup.client.connect();
    const delays = [];
    for (let i = 0; i < 9; i += 1) {
      FakeSocket.last().drop(1006);
      delays.push(setup.clock.pendingDelays()[0]);
      setup.clock.advance(delays.at(-1));
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
    assert.equal(maxReached, 1, "told once, but still retrying");
    assert.equal(FakeSocket.instances.length, 10);
  });

  it("jitter keeps each delay between half and the full step", () => {
    const low = makeClient({ random: () => 0 }).client;
    const high = makeClient({ random: () => 0.999999 }).client;
    for (let attempt = 1; attempt <= 8; attempt += 1) {
      const step = Math.min(30000, 1000 * 2 ** (attempt - 1));
      assert.equal(low.backoffDelay(attempt), step / 2);
      assert.ok(high.backoffDelay(attempt) <= step && high.backoffDelay(attempt) > step * 0.99);
    }
  });

  it("a welcome resets the back-off", () => {
    const setup = makeClient({ random: () => 1 });
    setup.client.connect();
    FakeSocket.last().drop();
    setup.clock.advance(1000);
    FakeSocket.last().drop();
    assert.deepEqual(setup.clock.pendingDelays(), [2000]);
    setup.clock.advance(2000);
    openWith(setup.client, LOBBY);
    FakeSocket.last().drop();
    assert.equal(setup.clock.pendingDelays()[0], 1000);
  });

  it("does not retry after 4401, and sends the user to log in", () => {
    const setup = makeClient();
    const connected = setup.client.connect();
    connected.catch(() => {});
    const socket = FakeSocket.last();
    socket.open();
    socket.drop(4401);
    setup.clock.advance(10 * 60_000);
    assert.equal(FakeSocket.instances.length, 1);
    assert.deepEqual(setup.authFailures, [4401]);
    assert.equal(setup.client.state, "unauthorized");
    return assert.rejects(connected);
  });

  it("does not retry after 4403 either", () => {
    const setup = makeClient();
    setup.client.connect().catch(() => {});
    openWith(setup.client, LOBBY);
    FakeSocket.last().drop(4403);
    setup.clock.advance(10 * 60_000);
    assert.equal(FakeSocket.instances.length, 1);
    assert.deepEqual(setup.authFailures, [4403]);
  });

  it("retries at once when the browser goes online or the tab shows", () => {
    const target = new EventTarget();
    const doc = new EventTarget();
    doc.visibilityState = "hidden";
    const setup = makeClient({ eventTarget: target, document: doc });
    setup.client.connect();
    FakeSocket.last().drop();
    for (let i = 0; i < 5; i += 1) {
      setup.clock.advance(setup.clock.pendingDelays()[0]);
      FakeSocket.last().drop();
    }
    const before = FakeSocket.instances.length;
    target.dispatchEvent(new Event("online"));
    assert.equal(FakeSocket.instances.length, before + 1);
    FakeSocket.last().drop();
    doc.visibilityState = "visible";
    doc.dispatchEvent(new Event("visibilitychange"));
    assert.equal(FakeSocket.instances.length, before + 2);
  });

  it("close() stops for good", () => {
    const setup = makeClient();
    setup.client.connect().catch(() => {});
    const socket = openWith(setup.client, LOBBY);
    setup.client.close();
    assert.equal(socket.closedWith, 1000);
    setup.clock.advance(10 * 60_000);
    assert.equal(FakeSocket.instances.length, 1);
  });

  it("a silent socket is pinged, then replaced", () => {
    const setup = makeClient();
    setup.client.connect();
    const socket = openWith(setup.client, LOBBY);
    setup.clock.advance(25_000);
    assert.equal(socket.sentOfType("ping").length, 1);
    setup.clock.advance(10_000);
    assert.equal(socket.closedWith, 4000);
    setup.clock.advance(1000);
    assert.equal(FakeSocket.instances.length, 2);
  });
});
