/**
 * REST calls of the page (PROTOCOL.md section 8): session cookie, CSRF header on unsafe
 * methods, JSON in and out. Errors carry the server's {"error": {"code", "message"}}.
 */

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  // CSRF_USE_SESSIONS or an HttpOnly cookie: the page template carries the token too.
  return document.querySelector("input[name=csrfmiddlewaretoken]")?.value ?? "";
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  const response = await fetch(`/api${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = response.status === 204 ? null : await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    const detail = error.message ?? data?.detail ?? (data && typeof data === "object" ? firstFieldError(data) : "");
    throw new ApiError(response.status, error.code ?? "", detail);
  }
  return data;
}

/** DRF validation errors come as {"field": ["message"]}: show the first one. */
function firstFieldError(data) {
  for (const [field, messages] of Object.entries(data)) {
    const text = Array.isArray(messages) ? messages[0] : messages;
    if (typeof text === "string") return field === "non_field_errors" ? text : `${field}: ${text}`;
  }
  return "";
}

/** A list out of a paginated or plain response. */
export function listOf(data) {
  if (Array.isArray(data)) return data;
  if (Array.isArray(data?.results)) return data.results;
  if (Array.isArray(data?.rooms)) return data.rooms;
  if (Array.isArray(data?.users)) return data.users;
  return [];
}
