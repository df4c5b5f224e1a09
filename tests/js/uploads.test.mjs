// Chunked uploads over the fake socket: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { UploadManager } from "../../static/chat/uploads.js";
import { FakeSocket, makeClient, openWith, settle, welcome } from "./helpers.mjs";

const ROOMS = [{ room: "lobby", name: "Lobby", kind: "public", lastSeq: 0, lastChange: 0, readSeq: 0, unread: 0 }];

function setup() {
  const env = makeClient();
  env.client.connect();
  const socket = openWith(env.client, ROOMS);
  const changes = [];
  const manager = new UploadManager(env.client, { onChange: (u) => changes.push(u.state), digest: async () => "a".repeat(64) });
  return { ...env, socket, manager, changes };
}

const file = (size) => Object.assign(new Blob([new Uint8Array(size).fill(7)], { type: "image/png" }), { name: "cat.png" });

describe("UploadManager", () => {
  it("starts, sends chunks from file_ready, ends after the last progress", async () => {
    const { socket, manager } = setup();
    const upload = manager.start(file(10), "lobby");
    await settle();
    const [start] = socket.sentOfType("file_start");
    assert.deepEqual(start.extra, { name: "cat.png", size: 10, mime: "image/png", sha256: "a".repeat(64) });
    socket.receive({ type: "file_ready", messageId: start.messageId, extra: { uploadId: "u1", chunkSize: 4, received: 0, nextIndex: 0, size: 10 } });
    await settle();
    assert.deepEqual(socket.sentOfType("file_chunk").map((f) => f.extra.index), [0, 1, 2]);
    for (const received of [4, 8, 10]) socket.receive({ type: "file_progress", messageId: start.messageId, extra: { uploadId: "u1", received, size: 10 } });
    await settle();
    assert.equal(socket.sentOfType("file_end").length, 1);
    socket.receive({ type: "ack", messageId: start.messageId, id: 1, seq: 1, room: "lobby", timestamp: 1 });
    assert.equal(upload.state, "done");
    assert.equal(manager.active().length, 0);
  });

  it("resumes after a reconnect from the server's nextIndex", async () => {
    const { socket, manager, clock } = setup();
    manager.start(file(12), "lobby");
    await settle();
    const [start] = socket.sentOfType("file_start");
    socket.receive({ type: "file_ready", messageId: start.messageId, extra: { uploadId: "u9", chunkSize: 4, received: 0, nextIndex: 0, size: 12 } });
    await settle();
    socket.receive({ type: "file_progress", extra: { uploadId: "u9", received: 4, size: 12 } });
    socket.drop(1006);
    clock.advance(60_000);
    const next = FakeSocket.last();
    next.open();
    next.receive(welcome(ROOMS));
    const [again] = next.sentOfType("file_start");
    assert.equal(again.extra.uploadId, "u9");
    assert.equal(again.messageId, start.messageId);
    next.receive({ type: "file_ready", messageId: again.messageId, extra: { uploadId: "u9", chunkSize: 4, received: 4, nextIndex: 1, size: 12 } });
    await settle();
    assert.deepEqual(next.sentOfType("file_chunk").map((f) => f.extra.index), [1, 2]);
  });

  it("refuses a file over the welcome's limit without sending anything", () => {
    const { socket, manager } = setup();
    const big = { name: "big.bin", size: 26214401, type: "application/octet-stream", slice() {} };
    const upload = manager.start(big, "lobby");
    assert.equal(upload.state, "failed");
    assert.equal(upload.error, "too_large");
    assert.equal(socket.sentOfType("file_start").length, 0);
  });

  it("cancel stops sending", async () => {
    const { socket, manager } = setup();
    const upload = manager.start(file(10), "lobby");
    await settle();
    manager.cancel(upload.id);
    const [start] = socket.sentOfType("file_start");
    socket.receive({ type: "file_ready", messageId: start.messageId, extra: { uploadId: "u2", chunkSize: 4, received: 0, nextIndex: 0, size: 10 } });
    await settle();
    assert.equal(socket.sentOfType("file_chunk").length, 0);
  });
});
