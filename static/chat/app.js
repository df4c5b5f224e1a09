/**
 * The chat page: wires the ChatClient to the sidebar, the message log, the composer, the
 * online list, uploads, dialogs, notifications and the tab title.
 *
 * Data reaches the page through the json_script block "chat-config" (no inline script: the
 * Content-Security-Policy allows scripts from 'self' only), and user text is only ever set as
 * text (see dom.js).
 */
import { api, listOf } from "./api.js";
import { ChatClient } from "./chat-client.js";
import { Composer } from "./composer.js";
import { $, h, replaceChildren } from "./dom.js";
import { gettext, interpolate, ngettext, pageLanguage } from "./i18n.js";
import { MessageLog } from "./message-view.js";
import { directPartner, formatSize, titleWithUnread } from "./text.js";
import { UploadManager } from "./uploads.js";

const config = JSON.parse($("#chat-config").textContent);
const me = config.user; // {username, displayName, isStaff}
const TYPING_SHOWN_MS = 6000;

const rooms = new Map(); // slug -> room (see newRoom)
const users = new Map(); // username -> display name, learnt from frames
let current = null; // slug of the open room
let pendingDirect = null; // username whose direct room is being opened
let firstWelcome = true;

const client = new ChatClient(config.wsUrl, me.username, { loginUrl: config.loginUrl });
// Exposed for the browser tests and for debugging from the console.
globalThis.chatClient = client;

// --- Elements --------------------------------------------------------------------------------

const el = {
  app: $("#app"),
  roomList: $("#room-list"),
  dmList: $("#dm-list"),
  roomTitle: $("#room-title"),
  roomTopic: $("#room-topic"),
  roomMembers: $("#room-members"),
  leaveButton: $("#leave-room"),
  status: $("#connection-status"),
  retryButton: $("#retry-now"),
  typing: $("#typing"),
  onlineList: $("#online-list"),
  onlineCount: $("#online-count"),
  uploads: $("#upload-list"),
  alerts: $("#alerts"),
  notifyButton: $("#notify-toggle"),
  dropZone: $("#drop-zone"),
  main: $("#room"),
};

users.set(me.username, me.displayName);

const log = new MessageLog({
  logEl: $("#message-log"),
  listEl: $("#message-list"),
  topSentinel: $("#history-top"),
  loadOlderButton: $("#load-older"),
  historyStart: $("#history-start"),
  jumpButton: $("#jump-latest"),
  input: $("#message-input"),
  me,
  canModerate: (room) => Boolean(me.isStaff || room?.role === "owner" || room?.role === "moderator"),
  onReply: (message) => composer.startReply(message),
  onEdit: (message) => composer.startEdit(message),
  onDelete: (message) => confirmDelete(message),
  onUser: (username) => showUser(username),
  onLoadOlder: () => loadOlder(),
  onOpenImage: (attachment) => openImage(attachment),
  onDiscard: (messageId) => client.discardMessage(messageId),
  onBottom: () => scheduleRead(),
});

const composer = new Composer({
  form: $("#composer"),
  input: $("#message-input"),
  sendButton: $("#send-button"),
  counter: $("#char-counter"),
  context: $("#composer-context"),
  contextText: $("#composer-context-text"),
  cancelButton: $("#composer-cancel"),
  fileInput: $("#file-input"),
  notice: $("#composer-notice"),
  onSubmit: (text, mode) => submitText(text, mode),
  onTyping: (state) => current && client.sendTyping(current, state),
  onEditLast: () => editLastOwn(),
  onFiles: (files) => uploadFiles(files),
});

const uploads = new UploadManager(client, { onChange: () => renderUploads() });

// --- Rooms -----------------------------------------------------------------------------------

function newRoom(slug) {
  return {
    slug,
    name: slug,
    kind: "public",
    topic: "",
    role: "member",
    locked: false,
    members: 0,
    lastSeq: 0,
    readSeq: 0,
    loaded: false,
    loading: false,
    hasOlder: false,
    loadingOlder: false,
    olderFailed: false,
    markerSeq: null,
    messages: [], // sorted by seq
    bySeq: new Map(),
    byId: new Map(),
    messageIds: new Set(), // client ids of stored messages (one's own)
    online: [],
    typing: new Map(), // username -> timer
    get displayName() {
      return this.kind === "direct" ? userName(directPartner(this.name, me.username)) : this.name;
    },
  };
}

function ensureRoom(slug, fields = {}) {
  let room = rooms.get(slug);
  if (!room) {
    room = newRoom(slug);
    rooms.set(slug, room);
  }
  for (const [key, value] of Object.entries(fields)) if (value !== undefined) room[key] = value;
  return room;
}

function userName(username) {
  return users.get(username) || username;
}

function unread(room) {
  return Math.max(0, room.lastSeq - room.readSeq);
}

function openRoom(slug, { push = true, focus = true } = {}) {
  const room = rooms.get(slug);
  if (!room) return;
  current = slug;
  if (push && location.pathname !== roomPath(slug)) history.pushState({ room: slug }, "", roomPath(slug));
  try {
    localStorage.setItem("chat-last-room", slug);
  } catch {
    // storage denied: nothing to remember
  }
  room.markerSeq = room.readSeq < room.lastSeq ? room.readSeq : null;
  if (!room.loaded && !room.loading) {
    room.loading = true;
    client.joinRoom(slug);
  }
  log.show(room, pendingFor(slug));
  el.app.dataset.loadedRoom = room.loaded ? slug : "";
  renderHeader();
  renderOnline();
  renderTyping();
  renderSidebar();
  renderUploads();
  closeDrawers();
  if (focus) composer.focus();
  scheduleRead();
}

function roomPath(slug) {
  return `/rooms/${encodeURIComponent(slug)}/`;
}

/** Messages of the room still in the outbox, unless already stored (a re-send after a reload
 * is answered with an ack only: its message is in the history). */
function pendingFor(slug) {
  const room = rooms.get(slug);
  return client.pendingMessages().filter((frame) => frame.to === slug && !room?.messageIds.has(frame.messageId));
}

function canPost(room) {
  if (!room) return { canPost: false, reason: "" };
  const moderator = me.isStaff || room.role === "owner" || room.role === "moderator";
  if (room.locked && !moderator) return { canPost: false, reason: gettext("This room is locked: only moderators can post.") };
  return { canPost: true };
}

function renderHeader() {
  const room = rooms.get(current);
  if (!room) {
    el.roomTitle.textContent = gettext("No room");
    el.roomTopic.textContent = "";
    el.roomMembers.textContent = "";
    el.leaveButton.hidden = true;
    composer.setRoom(null, { canPost: false, reason: gettext("Create a room or join one to start chatting.") });
    updateTitle();
    return;
  }
  el.roomTitle.textContent = room.kind === "direct" ? room.displayName : `#${room.name}`;
  el.roomTitle.classList.toggle("private", room.kind === "private");
  el.roomTopic.textContent = room.topic || "";
  el.roomMembers.textContent = room.members
    ? interpolate(ngettext("%(count)s member", "%(count)s members", room.members), { count: room.members })
    : "";
  el.leaveButton.hidden = room.kind === "direct";
  composer.setRoom(room, canPost(room));
  updateTitle();
}

function renderSidebar() {
  const all = [...rooms.values()];
  const byName = (a, b) => a.displayName.localeCompare(b.displayName, pageLanguage());
  syncList(el.roomList, all.filter((room) => room.kind !== "direct").sort(byName));
  const direct = all.filter((room) => room.kind === "direct" && !room.draft);
  syncList(el.dmList, direct.sort(byName));
  $("#dm-empty").hidden = direct.length > 0;
  updateTitle();
}

/** Update the list in place (keyed by slug) so that focus stays on a link while counts change. */
function syncList(list, wanted) {
  const existing = new Map([...list.children].map((li) => [li.dataset.room, li]));
  for (const [slug, li] of existing) if (!wanted.some((room) => room.slug === slug)) li.remove();
  wanted.forEach((room, index) => {
    let li = existing.get(room.slug);
    if (!li) {
      li = h("li", { dataset: { room: room.slug } });
      const link = h("a", { href: roomPath(room.slug), class: "room-link" });
      link.addEventListener("click", (event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
        event.preventDefault();
        openRoom(room.slug);
      });
      li.append(link);
    }
    const link = li.firstElementChild;
    const count = unread(room);
    const children = [h("span", { class: `room-name kind-${room.kind}` }, room.displayName)];
    if (count > 0 && room.slug !== current) {
      children.push(
        h(
          "span",
          { class: "badge" },
          String(count > 99 ? "99+" : count),
          h("span", { class: "visually-hidden" }, ` ${ngettext("unread message", "unread messages", count)}`),
        ),
      );
    }
    replaceChildren(link, children);
    link.classList.toggle("unread", count > 0 && room.slug !== current);
    if (room.slug === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
  });
}

function updateTitle() {
  let total = 0;
  for (const room of rooms.values()) if (room.slug !== current || document.hidden) total += unread(room);
  const room = rooms.get(current);
  const base = room ? `${room.kind === "direct" ? room.displayName : `#${room.name}`} · ${gettext("Chat")}` : gettext("Chat");
  document.title = titleWithUnread(base, total);
}

// --- Messages --------------------------------------------------------------------------------

function insertMessage(room, message) {
  if (room.bySeq.has(message.seq)) {
    replaceMessage(room, message);
    return "replaced";
  }
  room.bySeq.set(message.seq, message);
  room.byId.set(message.id, message);
  if (message.messageId) room.messageIds.add(message.messageId);
  const list = room.messages;
  if (!list.length || list[list.length - 1].seq < message.seq) {
    list.push(message);
    return "appended";
  }
  let low = 0;
  let high = list.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (list[mid].seq < message.seq) low = mid + 1;
    else high = mid;
  }
  list.splice(low, 0, message);
  return "inserted";
}

function replaceMessage(room, message) {
  const old = room.bySeq.get(message.seq);
  if (!old) return false;
  Object.assign(old, message, { extra: { ...old.extra, ...message.extra } });
  if (room.slug === current) {
    log.update(old);
    // Replies quoting it show its new text.
    for (const other of room.messages) if (other.extra?.replyTo === old.id) log.update(other);
  }
  return true;
}

function learnUser(username, displayName) {
  if (username && displayName && users.get(username) !== displayName) {
    users.set(username, displayName);
    return true;
  }
  return false;
}

client.on("history", (frame) => {
  const room = ensureRoom(frame.room);
  room.messages = [];
  room.bySeq.clear();
  room.byId.clear();
  room.messageIds.clear();
  for (const message of frame.extra?.messages ?? []) {
    learnUser(message.from, message.extra?.displayName);
    insertMessage(room, message);
  }
  room.loaded = true;
  room.loading = false;
  room.hasOlder = Boolean(frame.extra?.hasMore);
  if (room.messages.length) room.lastSeq = Math.max(room.lastSeq, room.messages[room.messages.length - 1].seq);
  if (room.slug === current) {
    room.markerSeq = room.readSeq < room.lastSeq ? room.readSeq : null;
    log.show(room, pendingFor(room.slug));
    el.app.dataset.loadedRoom = room.slug;
    performance.mark?.("chat:history-rendered");
    scheduleRead();
  }
  renderSidebar();
});

client.on("message", (message) => {
  const room = rooms.get(message.room);
  if (!room) return;
  learnUser(message.from, message.extra?.displayName);
  const mine = message.from === me.username;
  room.lastSeq = Math.max(room.lastSeq, message.seq);
  if (mine) room.readSeq = Math.max(room.readSeq, message.seq);
  stopTyping(room, message.from);
  if (room.loaded) {
    const where = insertMessage(room, message);
    if (room.slug === current) {
      if (where === "appended") log.append(message);
      else if (where === "inserted") log.rerenderKeepingPosition(pendingFor(room.slug));
      scheduleRead();
    }
  }
  if (!mine) notifyMessage(room, message);
  renderSidebar();
});

function applyChange(frame) {
  const room = rooms.get(frame.room);
  const old = room?.bySeq.get(frame.extra?.seq);
  if (!old) return;
  const extra = { ...old.extra };
  let content = old.content;
  if (frame.type === "message_deleted") {
    extra.deletedAt = frame.timestamp;
    extra.attachment = null;
    extra.mentions = [];
    content = "";
  } else {
    content = frame.extra.content;
    extra.editedAt = frame.extra.editedAt;
  }
  replaceMessage(room, { ...old, content, extra });
}

client.on("message_updated", applyChange);
client.on("message_deleted", applyChange);
client.on("message_changed", (message) => {
  const room = rooms.get(message.room);
  if (room?.loaded) replaceMessage(room, message);
});

client.on("outbox", () => {
  if (!current) return;
  // Pending items of the open room: show new ones; acknowledged ones leave when their
  // message arrives (message-view removes the item with the same messageId).
  const room = rooms.get(current);
  if (!room?.loaded) return; // shown with the history
  for (const frame of pendingFor(current)) log.addPending(frame);
});

client.on("ack", (frame) => {
  // A repeat (after a reload or a reconnect) is acknowledged without a new message frame:
  // if the message is already shown, the pending copy goes now.
  const room = rooms.get(frame.room);
  if (room?.bySeq.has(frame.seq) || room?.messageIds.has(frame.messageId)) log.removePending(frame.messageId);
  else log.setPendingState(frame.messageId, "sent");
});

client.on("message_failed", ({ message, error }) => {
  log.setPendingState(message.messageId, "failed");
  showAlert(interpolate(gettext("Your message was not delivered: %(reason)s"), { reason: errorText(error) }));
});

function submitText(text, mode) {
  if (!current) return;
  if (mode?.kind === "edit") {
    client.editMessage(mode.message.id, text);
    return;
  }
  const extra = mode?.kind === "reply" ? { replyTo: mode.message.id } : undefined;
  client.sendMessage(text, current, extra);
}

function editLastOwn() {
  const room = rooms.get(current);
  if (!room) return false;
  for (let i = room.messages.length - 1; i >= 0; i -= 1) {
    const message = room.messages[i];
    if (message.from === me.username && message.extra?.kind === "text" && !message.extra?.deletedAt) {
      composer.startEdit(message);
      return true;
    }
  }
  return false;
}

async function loadOlder() {
  const room = rooms.get(current);
  if (!room || !room.loaded || !room.hasOlder || room.loadingOlder) return;
  const first = room.messages[0];
  if (!first) return;
  room.loadingOlder = true;
  room.olderFailed = false;
  log.updateTop();
  try {
    const page = await client.fetchMessages(room.slug, { before: first.seq, limit: 50 });
    for (const message of page.results) {
      learnUser(message.from, message.extra?.displayName);
      insertMessage(room, message);
    }
    room.hasOlder = page.hasMore && page.results.length > 0;
  } catch {
    room.olderFailed = true;
  } finally {
    room.loadingOlder = false;
  }
  if (room.slug === current) log.rerenderKeepingPosition(pendingFor(room.slug));
}

let readTimer = null;

/** Move the read marker when the reader can see the newest message of the open room. */
function scheduleRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    const room = rooms.get(current);
    if (!room?.loaded || document.visibilityState !== "visible" || !log.isAtBottom()) return;
    if (room.lastSeq > room.readSeq) {
      room.readSeq = room.lastSeq;
      client.markRead(room.slug, room.lastSeq);
      renderSidebar();
    }
  }, 250);
}

document.addEventListener("visibilitychange", () => {
  // Leaving the tab: what arrives meanwhile gets a "new messages" line on return.
  const room = rooms.get(current);
  if (document.hidden && room?.loaded && room.markerSeq == null) room.markerSeq = room.lastSeq;
  scheduleRead();
  updateTitle();
});

client.on("read", (frame) => {
  const room = rooms.get(frame.room);
  if (!room) return;
  room.readSeq = Math.max(room.readSeq, frame.extra?.seq ?? 0);
  renderSidebar();
});

// --- Connection ------------------------------------------------------------------------------

client.on("state", ({ state }) => {
  const down = state === "reconnecting" || (state === "connecting" && !firstWelcome);
  const text = down
    ? gettext("Reconnecting…")
    : state === "unauthorized"
      ? gettext("You are signed out. Taking you to the login page…")
      : "";
  el.status.textContent = text;
  if (text) el.status.setAttribute("aria-label", text);
  else el.status.removeAttribute("aria-label");
  el.status.classList.toggle("visible", Boolean(text));
  el.retryButton.hidden = !down;
  el.app.classList.toggle("offline", down);
});

el.retryButton.addEventListener("click", () => client.retryNow());

client.on("welcome", (frame) => {
  const extra = frame.extra ?? {};
  if (extra.user) {
    me.displayName = extra.user.displayName || me.displayName;
    learnUser(me.username, me.displayName);
  }
  composer.setMaxLength(extra.limits?.maxContent);
  const present = new Set();
  for (const summary of extra.rooms ?? []) {
    present.add(summary.room);
    const room = ensureRoom(summary.room, { name: summary.name, kind: summary.kind });
    room.lastSeq = Math.max(room.lastSeq, summary.lastSeq ?? 0);
    room.readSeq = Math.max(room.readSeq, summary.readSeq ?? 0);
    room.lastChange = summary.lastChange;
  }
  // Rooms left or lost while the socket was down (a room being joined stays).
  for (const slug of [...rooms.keys()]) {
    if (!present.has(slug) && !rooms.get(slug).loading) rooms.delete(slug);
  }
  if (firstWelcome) {
    firstWelcome = false;
    openInitialRoom();
  } else if (current && !rooms.has(current)) {
    openFallbackRoom();
  }
  renderSidebar();
});

function openInitialRoom() {
  let slug = config.initialRoom;
  if (slug && !rooms.has(slug)) {
    // Not a member yet: a public room is joined by opening it; a wrong one ends in an error.
    ensureRoom(slug, { name: slug });
  }
  if (!slug) {
    let remembered = null;
    try {
      remembered = localStorage.getItem("chat-last-room");
    } catch {
      remembered = null;
    }
    slug = remembered && rooms.has(remembered) ? remembered : firstRoomSlug();
  }
  if (slug) openRoom(slug, { push: false });
  else renderHeader();
}

function firstRoomSlug() {
  const sorted = [...rooms.values()].sort((a, b) => (a.kind === "direct") - (b.kind === "direct") || a.name.localeCompare(b.name));
  return sorted[0]?.slug ?? null;
}

function openFallbackRoom() {
  const slug = firstRoomSlug();
  current = null;
  if (slug) openRoom(slug);
  else {
    log.show(null);
    renderHeader();
  }
}

client.on("room_state", (frame) => {
  const extra = frame.extra ?? {};
  const room = ensureRoom(frame.room, {
    name: extra.name,
    kind: extra.kind,
    topic: extra.topic,
    role: extra.role,
    locked: extra.locked,
    members: extra.members,
  });
  room.lastSeq = Math.max(room.lastSeq, extra.lastSeq ?? 0);
  room.readSeq = Math.max(room.readSeq, extra.readSeq ?? 0);
  if (pendingDirect && room.kind === "direct" && room.name.split(", ").includes(pendingDirect)) {
    const draft = `@${pendingDirect}`;
    pendingDirect = null;
    rooms.delete(draft);
    if (current === draft) openRoom(room.slug);
  }
  if (room.slug === current) renderHeader();
  renderSidebar();
});

client.on("room_added", (frame) => {
  const room = ensureRoom(frame.room);
  // The name and kind come with the room's state: load it.
  if (!room.loaded && !room.loading) {
    room.loading = true;
    client.joinRoom(frame.room);
  }
  renderSidebar();
});

client.on("room_removed", (frame) => {
  const room = rooms.get(frame.room);
  rooms.delete(frame.room);
  const reason = frame.extra?.reason;
  if (room && reason === "kicked") showAlert(interpolate(gettext("You were removed from %(room)s."), { room: room.displayName }));
  if (room && reason === "banned") showAlert(interpolate(gettext("You were banned from %(room)s."), { room: room.displayName }));
  if (frame.room === current) openFallbackRoom();
  renderSidebar();
});

client.on("room_updated", (frame) => {
  const room = rooms.get(frame.room);
  if (!room) return;
  ensureRoom(frame.room, { topic: frame.extra?.topic, locked: frame.extra?.locked });
  if (frame.room === current) renderHeader();
});

client.on("error", (frame) => {
  const extra = frame.extra ?? {};
  if (extra.requestType === "message" || extra.requestType?.startsWith("file_")) return; // shown elsewhere
  if (extra.requestType === "join_room" && frame.room) {
    const room = rooms.get(frame.room);
    if (room && !room.loaded) {
      rooms.delete(frame.room);
      if (frame.room === current) openFallbackRoom();
      renderSidebar();
    }
  }
  showAlert(errorText(frame));
});

function errorText(frame) {
  const code = frame.extra?.code;
  const retry = Number(frame.extra?.retryAfterMs);
  switch (code) {
    case "forbidden":
      if (retry > 0) {
        return interpolate(gettext("You are muted here for another %(seconds)s s."), { seconds: Math.ceil(retry / 1000) });
      }
      return gettext("You are not allowed to do that here.");
    case "not_found":
      return frame.room?.startsWith("@")
        ? gettext("There is no such user.")
        : gettext("That room or message does not exist, or it is private.");
    case "rate_limited":
      return gettext("You are sending too fast. Please wait a moment.");
    case "too_large":
      return gettext("That is too large.");
    case "invalid":
      return interpolate(gettext("The server refused this: %(detail)s"), { detail: frame.content || "" });
    case "upload_failed":
      return gettext("The upload failed.");
    case "server_error":
      return gettext("Something went wrong on the server. Please try again.");
    default:
      return frame.content || gettext("Something went wrong.");
  }
}

// --- Typing and presence ---------------------------------------------------------------------

client.on("typing", (frame) => {
  const room = rooms.get(frame.room);
  if (!room || frame.from === me.username) return;
  if (frame.extra?.state === "stop") {
    stopTyping(room, frame.from);
    return;
  }
  clearTimeout(room.typing.get(frame.from));
  room.typing.set(
    frame.from,
    setTimeout(() => stopTyping(room, frame.from), TYPING_SHOWN_MS),
  );
  if (room.slug === current) renderTyping();
});

function stopTyping(room, username) {
  if (!room.typing.has(username)) return;
  clearTimeout(room.typing.get(username));
  room.typing.delete(username);
  if (room.slug === current) renderTyping();
}

function renderTyping() {
  const room = rooms.get(current);
  const names = room ? [...room.typing.keys()].map(userName) : [];
  let text = "";
  if (names.length === 1) text = interpolate(gettext("%(name)s is typing…"), { name: names[0] });
  else if (names.length === 2) {
    text = interpolate(gettext("%(first)s and %(second)s are typing…"), { first: names[0], second: names[1] });
  } else if (names.length > 2) text = gettext("Several people are typing…");
  el.typing.textContent = text;
  if (text) el.typing.setAttribute("aria-label", text);
  else el.typing.removeAttribute("aria-label");
}

client.on("user_list", (frame) => {
  const room = rooms.get(frame.room);
  if (!room) return;
  room.online = frame.extra?.users ?? [];
  let renamed = false;
  for (const user of room.online) renamed = learnUser(user.username, user.displayName) || renamed;
  if (renamed) renderSidebar();
  if (room.slug === current) renderOnline();
});

function renderOnline() {
  const room = rooms.get(current);
  const online = [...(room?.online ?? [])].sort((a, b) =>
    (a.displayName || a.username).localeCompare(b.displayName || b.username, pageLanguage()),
  );
  replaceChildren(
    el.onlineList,
    online.map((user) => {
      const name = user.displayName || user.username;
      if (user.username === me.username) {
        return h("li", { class: "online-user me" }, h("span", { class: "presence-dot", "aria-hidden": "true" }), name, " ", h("span", { class: "you" }, gettext("(you)")));
      }
      return h(
        "li",
        { class: "online-user" },
        h("span", { class: "presence-dot", "aria-hidden": "true" }),
        h("button", { type: "button", class: "user-link", on: { click: () => showUser(user.username) } }, name),
      );
    }),
  );
  el.onlineCount.textContent = String(online.length);
}

// --- Direct messages and people --------------------------------------------------------------

function startDirect(username) {
  if (!username || username === me.username) return;
  for (const room of rooms.values()) {
    if (room.kind === "direct" && room.name.split(", ").includes(username)) {
      openRoom(room.slug);
      return;
    }
  }
  // The pair's direct room opens with its first message to "@username" (PROTOCOL.md section
  // 2: nothing else creates it). Until then a draft under that address takes the message;
  // room_added, then room_state, follow, and the real room replaces the draft.
  pendingDirect = username;
  const draft = ensureRoom(`@${username}`, { kind: "direct", name: `${me.username}, ${username}`, loaded: true });
  draft.draft = true;
  openRoom(draft.slug, { push: false });
}

function showUser(username) {
  const dialog = $("#dialog-user");
  $("#user-dialog-name").textContent = userName(username);
  $("#user-dialog-username").textContent = `@${username}`;
  const button = $("#user-dialog-dm");
  button.hidden = username === me.username;
  button.onclick = () => {
    dialog.close();
    startDirect(username);
  };
  openDialog(dialog);
}

// --- Dialogs ---------------------------------------------------------------------------------

let dialogReturnFocus = null;

function openDialog(dialog) {
  dialogReturnFocus = document.activeElement;
  for (const error of dialog.querySelectorAll(".form-error")) error.textContent = "";
  dialog.showModal();
}

for (const dialog of document.querySelectorAll("dialog")) {
  // Escape closes a modal dialog natively; focus goes back where it was.
  dialog.addEventListener("close", () => {
    if (dialogReturnFocus?.isConnected) dialogReturnFocus.focus();
    dialogReturnFocus = null;
  });
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
}

$("#open-create-room").addEventListener("click", () => {
  const form = $("#create-room-form");
  form.reset();
  delete form.elements.slug.dataset.edited;
  openDialog($("#dialog-create-room"));
});

$("#create-room-form").elements.name.addEventListener("input", (event) => {
  const slugInput = $("#create-room-form").elements.slug;
  if (!slugInput.dataset.edited) slugInput.value = slugify(event.target.value);
});
$("#create-room-form").elements.slug.addEventListener("input", (event) => {
  event.target.dataset.edited = "1";
});

function slugify(text) {
  return text
    .normalize("NFKD")
    .toLowerCase()
    .replace(/[\u0300-\u036f]/g, "")
    .replace(/[^a-z0-9_-]+/g, "-")
    .replace(/^[-_]+|-+$/g, "")
    .slice(0, 64);
}

$("#create-room-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const data = Object.fromEntries(new FormData(form));
  const slug = (data.slug || slugify(data.name) || `room-${Date.now().toString(36)}`).toLowerCase();
  const error = form.querySelector(".form-error");
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  try {
    const body = await api("/rooms/", { method: "POST", body: { slug, name: data.name, kind: data.kind, topic: data.topic } });
    const created = body?.slug ?? slug;
    ensureRoom(created, { name: body?.name ?? data.name, kind: body?.kind ?? data.kind, topic: body?.topic ?? data.topic });
    $("#dialog-create-room").close();
    openRoom(created);
  } catch (err) {
    error.textContent = err.message || gettext("The room could not be created.");
  } finally {
    submit.disabled = false;
  }
});

$("#open-browse-rooms").addEventListener("click", async () => {
  const dialog = $("#dialog-browse-rooms");
  const list = $("#browse-room-list");
  replaceChildren(list, h("li", { class: "muted" }, gettext("Loading…")));
  openDialog(dialog);
  try {
    const all = listOf(await api("/rooms/"));
    const joinable = all.filter((room) => (room.kind ?? "public") === "public" && !room.isMember && !rooms.has(room.slug));
    if (!joinable.length) {
      replaceChildren(list, h("li", { class: "muted" }, gettext("You are in every public room already.")));
      return;
    }
    replaceChildren(
      list,
      joinable.map((room) =>
        h(
          "li",
          { class: "browse-room" },
          h("div", {}, h("strong", {}, `#${room.name ?? room.slug}`), room.topic ? h("p", { class: "muted" }, room.topic) : null),
          h(
            "button",
            {
              type: "button",
              class: "button",
              on: {
                click: () => {
                  dialog.close();
                  ensureRoom(room.slug, { name: room.name ?? room.slug, kind: "public", topic: room.topic ?? "" });
                  openRoom(room.slug);
                },
              },
            },
            interpolate(gettext("Join %(room)s"), { room: `#${room.name ?? room.slug}` }),
          ),
        ),
      ),
    );
  } catch (err) {
    replaceChildren(list, h("li", { class: "form-error" }, err.message || gettext("Could not load the rooms.")));
  }
});

$("#open-new-dm").addEventListener("click", () => {
  $("#people-search").value = "";
  replaceChildren($("#people-results"));
  openDialog($("#dialog-new-dm"));
  searchPeople("");
});

let peopleTimer = null;
$("#people-search").addEventListener("input", (event) => {
  clearTimeout(peopleTimer);
  peopleTimer = setTimeout(() => searchPeople(event.target.value.trim()), 250);
});
$("#people-search").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    $("#people-results button")?.click();
  }
});

async function searchPeople(query) {
  const results = $("#people-results");
  try {
    const found = listOf(await api(`/users/?q=${encodeURIComponent(query)}`)).filter((user) => user.username !== me.username);
    if (!found.length) {
      replaceChildren(results, h("li", { class: "muted" }, query ? gettext("Nobody found.") : ""));
      return;
    }
    replaceChildren(
      results,
      found.slice(0, 20).map((user) => {
        const name = user.displayName || user.display_name || user.username;
        learnUser(user.username, name);
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "person",
              on: {
                click: () => {
                  $("#dialog-new-dm").close();
                  startDirect(user.username);
                },
              },
            },
            h("span", { class: "person-name" }, name),
            " ",
            h("span", { class: "muted" }, `@${user.username}`),
          ),
        );
      }),
    );
  } catch (err) {
    replaceChildren(results, h("li", { class: "form-error" }, err.message || gettext("The search failed.")));
  }
}

function confirmDialog(text, confirmLabel) {
  const dialog = $("#dialog-confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = confirmLabel;
  openDialog(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function confirmDelete(message) {
  const mine = message.from === me.username;
  const text = mine
    ? gettext("Delete this message? Everyone will see that a message was deleted.")
    : interpolate(gettext("Delete this message by %(name)s as a moderator?"), { name: userName(message.from) });
  if (await confirmDialog(text, gettext("Delete"))) client.deleteMessage(message.id);
}

el.leaveButton.addEventListener("click", async () => {
  const room = rooms.get(current);
  if (!room) return;
  const ok = await confirmDialog(interpolate(gettext("Leave %(room)s?"), { room: `#${room.name}` }), gettext("Leave"));
  if (ok) client.leaveRoom(room.slug);
});

function openImage(attachment) {
  const dialog = $("#dialog-image");
  const img = $("#image-full");
  img.src = attachment.url;
  img.alt = attachment.name || "";
  $("#image-caption").textContent = `${attachment.name || ""} · ${formatSize(attachment.size, pageLanguage())}`;
  $("#image-open").href = attachment.url;
  openDialog(dialog);
}

// --- Uploads ---------------------------------------------------------------------------------

function uploadFiles(files) {
  if (!current) return;
  for (const file of files) uploads.start(file, current);
}

const uploadItems = new Map(); // upload id -> {li, progress, status, button}

/** Update the upload list in place: rebuilding it on every progress event would replace the
 * Cancel button under the pointer (a click needs press and release on one element). */
function renderUploads() {
  const active = uploads.active();
  const ids = new Set(active.map((upload) => upload.id));
  for (const [id, item] of uploadItems) {
    if (!ids.has(id)) {
      item.li.remove();
      uploadItems.delete(id);
    }
  }
  for (const upload of active) {
    let item = uploadItems.get(upload.id);
    if (!item) {
      item = {
        li: h("li", { class: "upload" }),
        name: h("span", { class: "upload-name" }, upload.name),
        progress: h("progress", { max: upload.size, "aria-label": interpolate(gettext("Uploading %(name)s"), { name: upload.name }) }),
        status: h("span", { class: "upload-status" }),
        button: h("button", { type: "button", class: "link-button" }),
      };
      item.button.addEventListener("click", () => {
        if (upload.state === "failed") uploads.dismiss(upload.id);
        else uploads.cancel(upload.id);
        renderUploads();
      });
      item.li.append(item.name, item.progress, item.status, item.button);
      uploadItems.set(upload.id, item);
      el.uploads.append(item.li);
    }
    const failed = upload.state === "failed";
    item.li.classList.toggle("failed", failed);
    item.progress.hidden = failed;
    if (upload.received > 0 || upload.state === "sending" || upload.state === "finishing") {
      item.progress.value = upload.received;
    }
    const percent = upload.size ? Math.floor((100 * upload.received) / upload.size) : 0;
    let status;
    if (failed) status = uploadError(upload);
    else if (upload.state === "waiting") status = gettext("Waiting for the connection…");
    else if (upload.state === "finishing") status = gettext("Processing…");
    else status = `${percent}% · ${formatSize(upload.size, pageLanguage())}`;
    if (item.status.textContent !== status) item.status.textContent = status;
    const label = failed ? gettext("Dismiss") : gettext("Cancel");
    if (item.button.textContent !== label) item.button.textContent = label;
  }
  el.uploads.hidden = active.length === 0;
}

function uploadError(upload) {
  if (upload.error === "too_large") {
    const max = client.limits?.maxUpload;
    return max
      ? interpolate(gettext("Too large (at most %(size)s)."), { size: formatSize(max, pageLanguage()) })
      : gettext("That is too large.");
  }
  if (upload.error === "empty") return gettext("The file is empty.");
  return errorText({ extra: { code: upload.error }, content: upload.errorMessage });
}

let dragDepth = 0;
el.main.addEventListener("dragenter", (event) => {
  if (!event.dataTransfer?.types?.includes("Files")) return;
  dragDepth += 1;
  el.dropZone.hidden = false;
});
el.main.addEventListener("dragover", (event) => {
  if (event.dataTransfer?.types?.includes("Files")) event.preventDefault();
});
el.main.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) el.dropZone.hidden = true;
});
el.main.addEventListener("drop", (event) => {
  dragDepth = 0;
  el.dropZone.hidden = true;
  const files = [...(event.dataTransfer?.files ?? [])];
  if (!files.length) return;
  event.preventDefault();
  uploadFiles(files);
});

// --- Notifications ---------------------------------------------------------------------------

const NOTIFY_KEY = "chat-notifications";

function notificationsWanted() {
  try {
    return localStorage.getItem(NOTIFY_KEY) === "on";
  } catch {
    return false;
  }
}

function renderNotifyButton() {
  if (!("Notification" in globalThis)) {
    el.notifyButton.hidden = true;
    return;
  }
  el.notifyButton.hidden = false;
  const on = Notification.permission === "granted" && notificationsWanted();
  el.notifyButton.setAttribute("aria-pressed", String(on));
  el.notifyButton.title = on
    ? gettext("Desktop notifications are on for mentions and direct messages")
    : gettext("Get desktop notifications for mentions and direct messages");
  $("#notify-label").textContent = on ? gettext("Notifications on") : gettext("Notifications off");
}

el.notifyButton.addEventListener("click", async () => {
  if (!("Notification" in globalThis)) return;
  if (Notification.permission === "denied") {
    showAlert(gettext("Notifications are blocked for this site in the browser settings."));
    return;
  }
  let wanted = !(Notification.permission === "granted" && notificationsWanted());
  if (wanted && Notification.permission !== "granted") wanted = (await Notification.requestPermission()) === "granted";
  try {
    localStorage.setItem(NOTIFY_KEY, wanted ? "on" : "off");
  } catch {
    // not remembered
  }
  renderNotifyButton();
});

function notifyMessage(room, message) {
  if (!("Notification" in globalThis) || Notification.permission !== "granted" || !notificationsWanted()) return;
  if (document.visibilityState === "visible") return;
  const mentioned = (message.extra?.mentions ?? []).includes(me.username);
  if (!mentioned && room.kind !== "direct") return;
  const author = message.extra?.displayName || message.from;
  const title = room.kind === "direct" ? author : interpolate(gettext("%(name)s in %(room)s"), { name: author, room: `#${room.name}` });
  const body = message.content || message.extra?.attachment?.name || "";
  const notification = new Notification(title, { body: body.slice(0, 200), tag: `chat-${room.slug}` });
  notification.onclick = () => {
    globalThis.focus();
    openRoom(room.slug);
    notification.close();
  };
}

// --- Layout, keyboard, alerts ----------------------------------------------------------------

function showAlert(text) {
  const item = h("p", { class: "alert" }, text, " ", h("button", { type: "button", class: "link-button", on: { click: () => item.remove() } }, gettext("Dismiss")));
  el.alerts.append(item);
  setTimeout(() => item.remove(), 8000);
}

function closeDrawers() {
  el.app.classList.remove("sidebar-open", "online-open");
  $("#toggle-sidebar").setAttribute("aria-expanded", "false");
  $("#toggle-online").setAttribute("aria-expanded", "false");
}

$("#toggle-sidebar").addEventListener("click", (event) => {
  const open = !el.app.classList.contains("sidebar-open");
  closeDrawers();
  el.app.classList.toggle("sidebar-open", open);
  event.currentTarget.setAttribute("aria-expanded", String(open));
  if (open) $("#sidebar a, #sidebar button")?.focus();
});

$("#toggle-online").addEventListener("click", (event) => {
  const open = !el.app.classList.contains("online-open");
  closeDrawers();
  el.app.classList.toggle("online-open", open);
  event.currentTarget.setAttribute("aria-expanded", String(open));
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !document.querySelector("dialog[open]")) {
    if (el.app.classList.contains("sidebar-open") || el.app.classList.contains("online-open")) {
      closeDrawers();
      composer.focus();
    }
  }
});

globalThis.addEventListener("popstate", () => {
  const match = location.pathname.match(/^\/rooms\/([^/]+)\/$/);
  const slug = match ? decodeURIComponent(match[1]) : firstRoomSlug();
  if (slug && rooms.has(slug)) openRoom(slug, { push: false });
});

renderNotifyButton();
renderUploads();
client.connect().catch(() => {
  // 4401/4403: onAuthFailure already sends the page to the login form.
});
