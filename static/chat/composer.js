/**
 * The composer: Enter sends, Shift+Enter breaks the line (and Enter while an input method is
 * composing, e.g. pinyin, only confirms the candidate); a counter near the limit; reply and
 * edit modes (Escape leaves them; Up in an empty box edits one's last message); typing state;
 * pasted and dropped images become uploads.
 */
import { gettext, interpolate } from "./i18n.js";
import { contentLength } from "./text.js";

const TYPING_REFRESH_MS = 1500; // the server relays one "start" per 2 s at most
const TYPING_IDLE_MS = 4000;

export class Composer {
  constructor(options) {
    Object.assign(this, options); // form, input, sendButton, counter, context, contextText, cancelButton, fileInput
    this.maxLength = options.maxLength ?? 4000;
    this.mode = null; // null | {kind: "reply"|"edit", message}
    this.lastTypingSent = 0;
    this.typingTimer = null;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => this._onKey(event));
    this.input.addEventListener("input", () => this._onInput());
    this.input.addEventListener("paste", (event) => this._onPaste(event));
    this.input.addEventListener("blur", () => this._stopTyping());
    this.cancelButton.addEventListener("click", () => {
      this.clearMode();
      this.input.focus();
    });
    this.fileInput.addEventListener("change", () => {
      const files = [...(this.fileInput.files ?? [])];
      if (files.length) this.onFiles(files);
      this.fileInput.value = "";
    });
    this._refresh();
  }

  setMaxLength(max) {
    if (max) this.maxLength = max;
    this._refresh();
  }

  setRoom(room, { canPost = true, reason = "" } = {}) {
    this.clearMode();
    const label = room?.kind === "direct" ? room.displayName : `#${room?.name ?? ""}`;
    this.input.placeholder = room ? interpolate(gettext("Message %(room)s"), { room: label }) : "";
    this.input.disabled = !room || !canPost;
    this.fileInput.disabled = !room || !canPost;
    this.form.classList.toggle("disabled", !canPost);
    this.notice.textContent = canPost ? "" : reason;
    this.notice.hidden = canPost;
    this._refresh();
  }

  focus() {
    if (!this.input.disabled) this.input.focus();
  }

  submit() {
    const text = this.input.value;
    const length = contentLength(text);
    if (length === 0 || length > this.maxLength) return;
    const mode = this.mode;
    this.onSubmit(text.trim(), mode);
    this.input.value = "";
    this.clearMode();
    this._stopTyping();
    this._refresh();
  }

  startReply(message) {
    this.mode = { kind: "reply", message };
    const who = message.extra?.displayName || message.from || "";
    this.contextText.textContent = interpolate(gettext("Replying to %(name)s"), { name: who });
    this._showContext();
    this.input.focus();
  }

  startEdit(message) {
    this.mode = { kind: "edit", message };
    this.contextText.textContent = gettext("Editing your message (Escape to cancel)");
    this.input.value = message.content;
    this._showContext();
    this._refresh();
    this.input.focus();
    this.input.setSelectionRange(this.input.value.length, this.input.value.length);
  }

  clearMode() {
    const wasEditing = this.mode?.kind === "edit";
    this.mode = null;
    this.context.hidden = true;
    this.sendButton.textContent = gettext("Send");
    if (wasEditing) this.input.value = "";
    this._refresh();
  }

  _showContext() {
    this.context.hidden = false;
    this.sendButton.textContent = this.mode?.kind === "edit" ? gettext("Save") : gettext("Send");
  }

  _onKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      this.submit();
    } else if (event.key === "Escape" && this.mode) {
      event.preventDefault();
      this.clearMode();
    } else if (event.key === "ArrowUp" && this.input.value === "" && !this.mode) {
      if (this.onEditLast()) event.preventDefault();
    }
  }

  _onInput() {
    this._refresh();
    if (this.input.value.trim() === "") {
      this._stopTyping();
      return;
    }
    const now = Date.now();
    if (now - this.lastTypingSent >= TYPING_REFRESH_MS) {
      this.lastTypingSent = now;
      this.onTyping("start");
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this._stopTyping(), TYPING_IDLE_MS);
  }

  _stopTyping() {
    clearTimeout(this.typingTimer);
    this.typingTimer = null;
    if (this.lastTypingSent) {
      this.lastTypingSent = 0;
      this.onTyping("stop");
    }
  }

  _onPaste(event) {
    const files = [...(event.clipboardData?.files ?? [])].filter((file) => file.type.startsWith("image/"));
    if (!files.length) return;
    event.preventDefault();
    this.onFiles(files.map((file, i) => renamePasted(file, i)));
  }

  _refresh() {
    const length = contentLength(this.input.value);
    const near = length > this.maxLength * 0.8;
    this.counter.textContent = near ? `${length} / ${this.maxLength}` : "";
    this.counter.classList.toggle("over", length > this.maxLength);
    this.sendButton.disabled = this.input.disabled || length === 0 || length > this.maxLength;
    // Grow with the text up to a few lines (CSS caps the height).
    this.input.style.height = "auto";
    this.input.style.height = `${this.input.scrollHeight}px`;
  }
}

/** Pasted images are all called "image.png": give them a distinct, dated name. */
function renamePasted(file, index) {
  if (file.name && file.name !== "image.png") return file;
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  const ext = (file.type.split("/")[1] || "png").replace(/[^a-z0-9]/gi, "");
  try {
    return new File([file], `pasted-${stamp}${index ? `-${index}` : ""}.${ext}`, { type: file.type });
  } catch {
    return file;
  }
}
