/**
 * Pure helpers for showing messages: splitting text into plain text, links and mentions,
 * sizes, days, grouping. No DOM here, so Node's test runner checks them directly.
 */

// A URL starts with http:// or https:// and runs to the next space, angle bracket, quote or
// CJK punctuation (Chinese text puts no space after a link).
const URL_RE = /\bhttps?:\/\/[^\s<>"'`\u3000-\u303f\uff00-\uffef]+/giu;
// As the server's MENTION_RE: "@name" not glued to a preceding word character or "@".
const MENTION_RE = /(?<![\p{L}\p{N}_@])@([\p{L}\p{N}_.@+-]+)/gu;
const TRAILING_PUNCTUATION = /^[.,;:!?'"\u201d\u2019)\]}>\u3002\uff0c\uff1b\uff1a\uff01\uff1f]$/u;

/**
 * Split message text into tokens: {type: "text", text}, {type: "link", text, href} and
 * {type: "mention", text, username, me}. Only http(s) URLs become links; a mention is
 * highlighted only when the server listed the name in `extra.mentions`.
 */
export function tokenize(text, { mentions = [], me = null } = {}) {
  const tokens = [];
  let last = 0;
  for (const match of String(text ?? "").matchAll(URL_RE)) {
    const raw = trimUrl(match[0]);
    const href = safeHref(raw);
    if (!href) continue;
    if (match.index > last) tokens.push(...mentionTokens(text.slice(last, match.index), mentions, me));
    tokens.push({ type: "link", text: raw, href });
    last = match.index + raw.length;
  }
  if (last < String(text ?? "").length) tokens.push(...mentionTokens(String(text).slice(last), mentions, me));
  return tokens;
}

function mentionTokens(text, mentions, me) {
  const tokens = [];
  const known = new Set(mentions);
  let last = 0;
  for (const match of text.matchAll(MENTION_RE)) {
    const username = match[1].replace(/\.+$/, "");
    if (!known.has(username)) continue;
    if (match.index > last) tokens.push({ type: "text", text: text.slice(last, match.index) });
    const shown = `@${username}`;
    tokens.push({ type: "mention", text: shown, username, me: username === me });
    last = match.index + shown.length;
  }
  if (last < text.length) tokens.push({ type: "text", text: text.slice(last) });
  return tokens;
}

/** Leave closing punctuation out of a URL, but keep a ")" that closes a "(" inside it. */
export function trimUrl(url) {
  let result = url;
  while (result.length > 0) {
    const ch = result.slice(-1);
    if (!TRAILING_PUNCTUATION.test(ch)) break;
    if (ch === ")") {
      const body = result.slice(0, -1);
      if (count(body, "(") > count(body, ")")) break;
    }
    result = result.slice(0, -1);
  }
  return result;
}

function count(text, ch) {
  return text.split(ch).length - 1;
}

/** The URL as an href if it is http(s) and parses; null otherwise. */
export function safeHref(raw) {
  try {
    const url = new URL(raw);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return url.href;
  } catch {
    return null;
  }
}

/** Human size: 512 B, 1.5 KB, 20 MB (binary multiples, as file managers show). */
export function formatSize(bytes, locale = "en") {
  const units = ["B", "KB", "MB", "GB"];
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 10 ? 0 : 1;
  return `${new Intl.NumberFormat(locale, { maximumFractionDigits: digits }).format(value)} ${units[unit]}`;
}

/** A local calendar day as "YYYY-MM-DD", for day separators. */
export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

const GROUP_WINDOW_MS = 5 * 60 * 1000;

/** Whether `message` continues `previous`'s group (same author, same day, within 5 min). */
export function continuesGroup(previous, message) {
  if (!previous || !message) return false;
  if (previous.from == null || previous.from !== message.from) return false;
  if (previous.extra?.kind === "system" || message.extra?.kind === "system") return false;
  if (message.extra?.replyTo) return false;
  if (dayKey(previous.timestamp) !== dayKey(message.timestamp)) return false;
  return message.timestamp - previous.timestamp < GROUP_WINDOW_MS;
}

/** Unicode code points after trimming, as the server counts a message's length. */
export function contentLength(text) {
  return [...String(text ?? "").trim()].length;
}

/** The other participant of a direct room named "alice, bob". */
export function directPartner(roomName, me) {
  const names = String(roomName ?? "")
    .split(",")
    .map((name) => name.trim())
    .filter(Boolean);
  return names.find((name) => name !== me) ?? names[0] ?? "";
}

/** "(3) Lobby · Chat": the tab title with the unread total in front. */
export function titleWithUnread(base, unread) {
  return unread > 0 ? `(${unread > 99 ? "99+" : unread}) ${base}` : base;
}
