/**
 * The message log of the open room: one list item per message (author, local time, text),
 * consecutive messages of one author grouped, day separators, a "new messages" line at the read
 * marker, pending (not yet acknowledged) messages at the end, and scrolling that stays pinned
 * to the bottom only when the reader is already there.
 */
import { h, replaceChildren } from "./dom.js";
import { gettext, interpolate, pageLanguage } from "./i18n.js";
import { continuesGroup, dayKey, formatSize, tokenize } from "./text.js";

const BOTTOM_SLACK_PX = 48;

export class MessageLog {
  constructor(options) {
    Object.assign(this, options); // logEl, listEl, loadOlderButton, historyStart, jumpButton, me, callbacks
    this.room = null;
    this.atBottom = true;
    const lang = pageLanguage();
    this.timeFormat = new Intl.DateTimeFormat(lang, { hour: "numeric", minute: "2-digit" });
    this.fullFormat = new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "short" });
    this.dayFormat = new Intl.DateTimeFormat(lang, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
    this.logEl.addEventListener("scroll", () => this._onScroll(), { passive: true });
    this.logEl.addEventListener("keydown", (event) => this._onKey(event));
    this.logEl.addEventListener("focusin", (event) => this._onFocusIn(event));
    this.logEl.addEventListener("focusout", (event) => this._onFocusOut(event));
    this.jumpButton.addEventListener("click", () => {
      this.scrollToBottom();
      this.input?.focus();
    });
    this.loadOlderButton.addEventListener("click", () => this.onLoadOlder());
    if ("IntersectionObserver" in globalThis) {
      // Infinite scroll: reaching the top of the log loads the page before it.
      this.observer = new IntersectionObserver(
        (entries) => {
          if (entries.some((entry) => entry.isIntersecting) && this.room?.hasOlder) this.onLoadOlder();
        },
        { root: this.logEl, rootMargin: "200px 0px 0px 0px" },
      );
      this.observer.observe(this.topSentinel);
    }
  }

  // --- Whole log ---------------------------------------------------------------------------

  /** Show `room` from scratch: at the "new messages" line if there is one, else the bottom. */
  show(room, pending = []) {
    this.room = room;
    this.render(pending);
    const marker = this.listEl.querySelector(".new-marker");
    if (marker) {
      this.logEl.scrollTop = Math.max(0, marker.offsetTop - this.logEl.clientHeight / 3);
      this._onScroll();
    } else {
      this.scrollToBottom();
    }
  }

  /** Re-render every item, keeping the reader's distance from the bottom (used after older
   * messages were put in front). */
  rerenderKeepingPosition(pending = []) {
    const fromBottom = this.logEl.scrollHeight - this.logEl.scrollTop;
    this.render(pending);
    this.logEl.scrollTop = this.logEl.scrollHeight - fromBottom;
  }

  render(pending = []) {
    const room = this.room;
    this.logEl.setAttribute("aria-busy", "true");
    const items = [];
    let previous = null;
    let markerPlaced = false;
    for (const message of room?.messages ?? []) {
      if (!previous || dayKey(previous.timestamp) !== dayKey(message.timestamp)) {
        items.push(this._daySeparator(message.timestamp));
        previous = null;
      }
      if (!markerPlaced && this._isMarkerBefore(room, message)) {
        items.push(this._newMarker());
        markerPlaced = true;
        previous = null;
      }
      items.push(this.renderItem(message, continuesGroup(previous, message)));
      previous = message;
    }
    for (const frame of pending) items.push(this.renderPending(frame));
    replaceChildren(this.listEl, items);
    this._updateTop();
    this.logEl.removeAttribute("aria-busy");
  }

  _isMarkerBefore(room, message) {
    return room.markerSeq != null && message.seq > room.markerSeq && message.from !== this.me.username;
  }

  _updateTop() {
    const room = this.room;
    const loaded = Boolean(room?.loaded);
    this.loadOlderButton.hidden = !(loaded && room.hasOlder);
    this.loadOlderButton.disabled = Boolean(room?.loadingOlder);
    this.loadOlderButton.textContent = room?.olderFailed
      ? gettext("Could not load older messages. Try again")
      : room?.loadingOlder
        ? gettext("Loading…")
        : gettext("Load older messages");
    this.historyStart.hidden = !(loaded && !room.hasOlder);
    this.historyStart.textContent = room?.kind === "direct"
      ? gettext("This is the beginning of your direct messages.")
      : gettext("This is the beginning of the room.");
  }

  updateTop() {
    this._updateTop();
  }

  // --- Incremental changes -----------------------------------------------------------------

  /** Add a new message at the end (before the pending ones). */
  append(message) {
    const wasAtBottom = this.isAtBottom();
    const lastItem = this._lastMessageItem();
    const previous = lastItem ? this.room.bySeq.get(Number(lastItem.dataset.seq)) : null;
    const nodes = [];
    let grouped = continuesGroup(previous, message);
    if (!previous || dayKey(previous.timestamp) !== dayKey(message.timestamp)) {
      nodes.push(this._daySeparator(message.timestamp));
      grouped = false;
    }
    const unseen = !wasAtBottom || document.hidden;
    if (!this.listEl.querySelector(".new-marker") && this._isMarkerBefore(this.room, message) && unseen) {
      nodes.push(this._newMarker());
      grouped = false;
    }
    nodes.push(this.renderItem(message, grouped));
    const pendingNode = message.messageId ? this._pendingNode(message.messageId) : null;
    pendingNode?.remove();
    const firstPending = this.listEl.querySelector(".message.pending");
    for (const node of nodes) this.listEl.insertBefore(node, firstPending);
    const mine = message.from === this.me.username;
    if (wasAtBottom || mine) this.scrollToBottom();
    else this.jumpButton.hidden = false;
  }

  /** Re-render one message in place (edited, deleted, its reply target loaded). */
  update(message) {
    const node = this.listEl.querySelector(`li[data-seq="${message.seq}"]`);
    if (!node) return;
    const grouped = node.classList.contains("grouped");
    const hadFocus = node.contains(document.activeElement);
    const fresh = this.renderItem(message, grouped);
    node.replaceWith(fresh);
    if (hadFocus) fresh.focus();
  }

  addPending(frame) {
    if (this._pendingNode(frame.messageId)) return;
    this.listEl.append(this.renderPending(frame));
    this.scrollToBottom(); // one's own message is always brought into view
  }

  setPendingState(messageId, state) {
    const node = this._pendingNode(messageId);
    if (!node) return;
    node.classList.toggle("failed", state === "failed");
    node.classList.toggle("sent", state === "sent");
    const status = node.querySelector(".pending-status");
    if (status) replaceChildren(status, this._pendingStatus(messageId, state));
  }

  removePending(messageId) {
    this._pendingNode(messageId)?.remove();
  }

  _pendingNode(messageId) {
    return [...this.listEl.querySelectorAll(".message.pending")].find((li) => li.dataset.messageId === messageId);
  }

  _lastMessageItem() {
    const items = this.listEl.querySelectorAll("li.message:not(.pending)");
    return items[items.length - 1] ?? null;
  }

  // --- Items -------------------------------------------------------------------------------

  renderItem(message, grouped) {
    const extra = message.extra ?? {};
    const mine = message.from != null && message.from === this.me.username;
    const deleted = Boolean(extra.deletedAt);
    const mentionsMe = (extra.mentions ?? []).includes(this.me.username) && !mine;
    const classes = ["message"];
    if (grouped) classes.push("grouped");
    if (mine) classes.push("mine");
    if (deleted) classes.push("deleted");
    if (mentionsMe) classes.push("mentions-me");
    if (extra.kind === "system") classes.push("system");
    const li = h("li", {
      class: classes.join(" "),
      id: `message-${message.id}`,
      tabindex: "-1",
      dataset: { seq: message.seq, id: message.id, hue: hue(message.from), initial: initial(extra.displayName || message.from) },
    });
    const time = this._time(message.timestamp);
    if (extra.kind === "system") {
      li.append(h("p", { class: "system-text" }, message.content), time);
      return li;
    }
    const author = extra.displayName || message.from || gettext("Deleted user");
    if (grouped) {
      // The author is still part of the item for screen readers and searches.
      li.append(h("span", { class: "visually-hidden" }, author), h("span", { class: "gutter-time" }, time));
    } else {
      li.append(
        h(
          "div",
          { class: "message-header" },
          message.from
            ? h("button", { type: "button", class: "author", on: { click: () => this.onUser(message.from) } }, author)
            : h("span", { class: "author" }, author),
          " ",
          time,
        ),
      );
    }
    if (extra.replyTo) li.append(this._replyQuote(extra.replyTo));
    if (deleted) {
      li.append(h("p", { class: "message-text deleted-text" }, gettext("Message deleted")));
    } else {
      // A file message's text is its file name: the attachment card already shows it.
      const caption = extra.attachment && message.content === extra.attachment.name ? "" : message.content;
      if (caption) li.append(this._text(caption, extra.mentions));
      if (extra.attachment) li.append(this._attachment(extra.attachment));
      if (extra.editedAt) {
        li.append(
          " ",
          h(
            "span",
            { class: "edited", title: this.fullFormat.format(new Date(extra.editedAt)) },
            gettext("(edited)"),
          ),
        );
      }
    }
    if (!deleted) li.append(this._actions(message, mine));
    // One Tab stop for the whole log: arrows pick a message, then Tab reaches its controls.
    for (const control of li.querySelectorAll("a, button")) control.tabIndex = -1;
    return li;
  }

  renderPending(frame) {
    const li = h("li", {
      class: "message pending mine",
      dataset: { messageId: frame.messageId },
    });
    li.append(
      h("div", { class: "message-header" }, h("span", { class: "author" }, this.me.displayName)),
      this._text(frame.content, []),
      h("p", { class: "pending-status" }, this._pendingStatus(frame.messageId, "sending")),
    );
    return li;
  }

  _pendingStatus(messageId, state) {
    if (state === "failed") {
      return [
        gettext("Not delivered."),
        " ",
        h("button", { type: "button", class: "link-button", on: { click: () => this.onDiscard(messageId) } }, gettext("Dismiss")),
      ];
    }
    return state === "sent" ? gettext("Sent") : gettext("Sending…");
  }

  _text(content, mentions) {
    const p = h("p", { class: "message-text" });
    for (const token of tokenize(content, { mentions: mentions ?? [], me: this.me.username })) {
      if (token.type === "link") {
        p.append(h("a", { href: token.href, rel: "noopener noreferrer nofollow", target: "_blank" }, token.text));
      } else if (token.type === "mention") {
        p.append(h("mark", { class: token.me ? "mention me" : "mention" }, token.text));
      } else {
        p.append(token.text);
      }
    }
    return p;
  }

  _attachment(attachment) {
    const name = attachment.name || gettext("file");
    const isImage = Boolean(attachment.thumbnailUrl || (attachment.width && attachment.height));
    if (isImage) {
      const img = h("img", {
        src: attachment.thumbnailUrl || attachment.url,
        alt: name,
        loading: "lazy",
        width: attachment.width ? Math.min(attachment.width, 320) : null,
        height:
          attachment.width && attachment.height
            ? Math.round((attachment.height * Math.min(attachment.width, 320)) / attachment.width)
            : null,
      });
      img.addEventListener("load", () => {
        if (this.atBottom) this.scrollToBottom();
      });
      return h(
        "button",
        {
          type: "button",
          class: "attachment-image",
          "aria-label": interpolate(gettext("Open image %(name)s"), { name }),
          on: { click: () => this.onOpenImage(attachment) },
        },
        img,
      );
    }
    return h(
      "a",
      { class: "attachment-file", href: attachment.url, download: name, rel: "noopener" },
      h("span", { class: "file-icon", "aria-hidden": "true" }),
      h("span", { class: "file-name" }, name),
      h("span", { class: "file-size" }, formatSize(attachment.size, pageLanguage())),
    );
  }

  _replyQuote(replyTo) {
    const original = this.room.byId.get(replyTo);
    let label;
    if (original) {
      const who = original.extra?.displayName || original.from || "";
      const what = original.extra?.deletedAt
        ? gettext("Message deleted")
        : original.content || original.extra?.attachment?.name || "";
      label = [h("span", { class: "reply-author" }, who), " ", h("span", { class: "reply-text" }, what.slice(0, 140))];
    } else {
      label = gettext("Reply to an earlier message");
    }
    return h(
      "button",
      {
        type: "button",
        class: "reply-quote",
        on: { click: () => this.focusMessage(replyTo) },
      },
      h("span", { class: "visually-hidden" }, gettext("In reply to:"), " "),
      label,
    );
  }

  _actions(message, mine) {
    const buttons = [];
    const button = (cls, label, onClick) =>
      h("button", { type: "button", class: `action ${cls}`, "aria-label": label, title: label, on: { click: onClick } });
    buttons.push(button("reply", gettext("Reply"), () => this.onReply(message)));
    if (mine && message.extra?.kind === "text") buttons.push(button("edit", gettext("Edit"), () => this.onEdit(message)));
    if (mine || this.canModerate(this.room)) {
      buttons.push(button("delete", gettext("Delete"), () => this.onDelete(message)));
    }
    return h("div", { class: "message-actions" }, buttons);
  }

  _time(ms) {
    const date = new Date(ms);
    return h(
      "time",
      { datetime: date.toISOString(), title: this.fullFormat.format(date), class: "message-time" },
      this.timeFormat.format(date),
    );
  }

  _daySeparator(ms) {
    const label = this.dayLabel(ms);
    return h("li", { class: "day-separator", role: "separator", "aria-label": label }, h("span", {}, label));
  }

  _newMarker() {
    const label = gettext("New messages");
    return h("li", { class: "new-marker", role: "separator", "aria-label": label }, h("span", {}, label));
  }

  dayLabel(ms) {
    const today = dayKey(Date.now());
    const yesterday = dayKey(Date.now() - 86400000);
    const key = dayKey(ms);
    if (key === today) return gettext("Today");
    if (key === yesterday) return gettext("Yesterday");
    return this.dayFormat.format(new Date(ms));
  }

  // --- Scrolling and keyboard --------------------------------------------------------------

  isAtBottom() {
    const el = this.logEl;
    return el.scrollHeight - el.scrollTop - el.clientHeight <= BOTTOM_SLACK_PX;
  }

  scrollToBottom() {
    this.logEl.scrollTop = this.logEl.scrollHeight;
    this.atBottom = true;
    this.jumpButton.hidden = true;
    this.onBottom?.();
  }

  _onScroll() {
    this.atBottom = this.isAtBottom();
    if (this.atBottom) {
      this.jumpButton.hidden = true;
      this.onBottom?.();
    }
  }

  focusMessage(id) {
    const node = this.listEl.querySelector(`li[data-id="${Number(id)}"]`);
    if (!node) return false;
    node.scrollIntoView({ block: "center" });
    node.classList.add("flash");
    setTimeout(() => node.classList.remove("flash"), 1500);
    node.focus();
    return true;
  }

  _messageItems() {
    return [...this.listEl.querySelectorAll("li.message:not(.pending)")];
  }

  _onKey(event) {
    const items = this._messageItems();
    if (!items.length) return;
    const current = event.target.closest?.("li.message");
    if (event.key === "ArrowUp" || event.key === "ArrowDown") {
      // Arrow keys move between messages; Tab then reaches the focused message's actions.
      if (event.target !== this.logEl && !current) return;
      event.preventDefault();
      let index = current ? items.indexOf(current) : items.length;
      index += event.key === "ArrowUp" ? -1 : 1;
      index = Math.max(0, Math.min(items.length - 1, index));
      items[index].focus();
    } else if (event.key === "End" && event.target === this.logEl) {
      this.scrollToBottom();
    } else if (current && event.target === current) {
      const message = this.room.bySeq.get(Number(current.dataset.seq));
      if (!message) return;
      if (event.key === "r") this.onReply(message);
      else if (event.key === "e") current.querySelector(".action.edit")?.click();
      else if (event.key === "Delete") current.querySelector(".action.delete")?.click();
      else return;
      event.preventDefault();
    }
  }

  _onFocusIn(event) {
    const item = event.target.closest?.("li.message:not(.pending)");
    if (!item) return;
    for (const control of item.querySelectorAll("a, button")) control.tabIndex = 0;
  }

  _onFocusOut(event) {
    const item = event.target.closest?.("li.message:not(.pending)");
    if (!item || item.contains(event.relatedTarget)) return;
    for (const control of item.querySelectorAll("a, button")) control.tabIndex = -1;
  }
}

/** A stable colour slot (0-7) for a username. */
function hue(username) {
  let sum = 0;
  for (const ch of String(username ?? "")) sum = (sum * 31 + ch.codePointAt(0)) % 9973;
  return sum % 8;
}

function initial(name) {
  const first = [...String(name ?? "?").trim()][0] ?? "?";
  return first.toUpperCase();
}
