/**
 * Chunked uploads over the chat socket (PROTOCOL.md section 5).
 *
 * file_start -> file_ready {uploadId, chunkSize, nextIndex}; file_chunk (base64) ->
 * file_progress {received}; file_end -> ack + the file message. A few chunks are kept in flight
 * (the server takes them in order on one socket). After a reconnect every unfinished upload
 * sends file_start again with its uploadId and goes on from the server's nextIndex.
 */

const WINDOW = 4; // chunks in flight
const MAX_RESYNCS = 5;

let localIds = 0;

export class UploadManager {
  /**
   * @param {import("./chat-client.js").ChatClient} client
   * @param {{onChange?: (upload) => void, digest?: (blob) => Promise<string|null>}} options
   */
  constructor(client, options = {}) {
    this.client = client;
    this.onChange = options.onChange ?? (() => {});
    this.digest = options.digest ?? sha256Hex;
    this.uploads = new Map(); // local id -> upload
    client.on("file_ready", (frame) => this._onReady(frame));
    client.on("file_progress", (frame) => this._onProgress(frame));
    client.on("ack", (frame) => this._onAck(frame));
    client.on("error", (frame) => this._onError(frame));
    client.on("close", () => this._onClose());
    client.on("welcome", () => this._resumeAll());
  }

  /** Start uploading `file` (a File or Blob with a name) to `room`; returns the upload. */
  start(file, room) {
    const upload = {
      id: `up${(localIds += 1)}`,
      messageId: this.client.generateMessageId(),
      file,
      room,
      name: file.name || "file",
      size: file.size,
      mime: file.type || "application/octet-stream",
      uploadId: null,
      chunkSize: 0,
      sendIndex: 0, // next chunk to send
      received: 0, // bytes the server confirmed
      inFlight: 0,
      resyncs: 0,
      sha256: null,
      state: "preparing", // preparing, starting, sending, finishing, waiting, done, failed, cancelled
      error: "",
    };
    const max = this.client.limits?.maxUpload;
    this.uploads.set(upload.id, upload);
    if (max && file.size > max) {
      this._fail(upload, "too_large");
      return upload;
    }
    if (file.size === 0) {
      this._fail(upload, "empty");
      return upload;
    }
    this._changed(upload);
    this._prepare(upload);
    return upload;
  }

  /** Stop an upload. The server has no cancel frame: the unfinished upload simply expires. */
  cancel(id) {
    const upload = this.uploads.get(id);
    if (!upload || upload.state === "done") return;
    upload.state = "cancelled";
    this.uploads.delete(id);
    this._changed(upload);
  }

  /** Forget a failed upload (the page removed its card). */
  dismiss(id) {
    const upload = this.uploads.get(id);
    if (upload && (upload.state === "failed" || upload.state === "done")) this.uploads.delete(id);
  }

  active() {
    return [...this.uploads.values()];
  }

  async _prepare(upload) {
    try {
      upload.sha256 = await this.digest(upload.file);
    } catch {
      upload.sha256 = null; // optional: the server checks the byte count anyway
    }
    if (upload.state !== "preparing") return;
    upload.state = "starting";
    this._sendStart(upload);
  }

  _sendStart(upload) {
    const extra = { name: upload.name, size: upload.size, mime: upload.mime };
    if (upload.sha256) extra.sha256 = upload.sha256;
    if (upload.uploadId) extra.uploadId = upload.uploadId;
    upload.inFlight = 0;
    const sent = this.client.sendNow({
      type: "file_start",
      to: upload.room,
      messageId: upload.messageId,
      timestamp: Date.now(),
      extra,
    });
    if (!sent) upload.state = "waiting";
    this._changed(upload);
  }

  _find(frame) {
    const uploadId = frame.extra?.uploadId;
    for (const upload of this.uploads.values()) {
      if (frame.messageId && upload.messageId === frame.messageId) return upload;
      if (uploadId && upload.uploadId === uploadId) return upload;
    }
    return null;
  }

  _onReady(frame) {
    const upload = this._find(frame);
    if (!upload || upload.state === "cancelled" || upload.state === "done") return;
    const extra = frame.extra ?? {};
    upload.uploadId = extra.uploadId ?? upload.uploadId;
    upload.chunkSize = extra.chunkSize || upload.chunkSize || 65536;
    upload.received = extra.received ?? 0;
    upload.sendIndex = extra.nextIndex ?? Math.floor(upload.received / upload.chunkSize);
    upload.inFlight = 0;
    upload.state = "sending";
    this._changed(upload);
    this._pump(upload);
  }

  _onProgress(frame) {
    const upload = this._find(frame);
    if (!upload || upload.state !== "sending") return;
    upload.received = Math.max(upload.received, frame.extra?.received ?? 0);
    upload.inFlight = Math.max(0, upload.inFlight - 1);
    this._changed(upload);
    this._pump(upload);
  }

  async _pump(upload) {
    if (upload.pumping) return;
    upload.pumping = true;
    try {
      while (upload.state === "sending" && upload.inFlight < WINDOW) {
        const offset = upload.sendIndex * upload.chunkSize;
        if (offset >= upload.size) break;
        const index = upload.sendIndex;
        const data = await toBase64(upload.file.slice(offset, offset + upload.chunkSize));
        if (upload.state !== "sending" || upload.sendIndex !== index) break;
        const sent = this.client.sendNow({ type: "file_chunk", extra: { uploadId: upload.uploadId, index, data } });
        if (!sent) {
          upload.state = "waiting";
          break;
        }
        upload.sendIndex += 1;
        upload.inFlight += 1;
      }
      if (upload.state === "sending" && upload.received >= upload.size) {
        upload.state = "finishing";
        if (!this.client.sendNow({ type: "file_end", extra: { uploadId: upload.uploadId } })) upload.state = "waiting";
        this._changed(upload);
      }
    } finally {
      upload.pumping = false;
    }
  }

  _onAck(frame) {
    const upload = this._find(frame);
    if (!upload) return;
    upload.state = "done";
    upload.received = upload.size;
    this.uploads.delete(upload.id);
    this._changed(upload);
  }

  _onError(frame) {
    const upload = this._find(frame);
    if (!upload || upload.state === "cancelled" || upload.state === "done") return;
    const code = frame.extra?.code;
    const requestType = frame.extra?.requestType;
    if (code === "upload_failed" && requestType === "file_chunk" && upload.resyncs < MAX_RESYNCS) {
      // A chunk the server did not expect (the ones after it fail the same way): ask where
      // the upload stands and go on from there. Only the first of those errors resyncs.
      if (upload.state === "sending") {
        upload.resyncs += 1;
        upload.state = "starting";
        this._sendStart(upload);
      }
      return;
    }
    const wait = Number(frame.extra?.retryAfterMs);
    if (code === "rate_limited" && wait > 0) {
      upload.state = "waiting";
      this._changed(upload);
      setTimeout(() => {
        if (upload.state === "waiting") this._sendStart(upload);
      }, wait);
      return;
    }
    this._fail(upload, code || "upload_failed", frame.content);
  }

  _onClose() {
    for (const upload of this.uploads.values()) {
      if (["starting", "sending", "finishing"].includes(upload.state)) {
        upload.state = "waiting";
        upload.inFlight = 0;
        this._changed(upload);
      }
    }
  }

  _resumeAll() {
    for (const upload of this.uploads.values()) {
      if (upload.state === "waiting") {
        upload.state = "starting";
        this._sendStart(upload);
      }
    }
  }

  _fail(upload, code, message = "") {
    upload.state = "failed";
    upload.error = code;
    upload.errorMessage = message;
    this._changed(upload);
  }

  _changed(upload) {
    try {
      this.onChange(upload);
    } catch (error) {
      globalThis.console?.error(error);
    }
  }
}

/** SHA-256 of a blob as hex, where the browser allows it (secure contexts); else null. */
export async function sha256Hex(blob) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle || blob.size > 64 * 1024 * 1024) return null;
  const digest = await subtle.digest("SHA-256", await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export async function toBase64(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  const step = 0x8000; // String.fromCharCode takes a limited number of arguments
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode(...bytes.subarray(i, i + step));
  }
  return btoa(binary);
}
