// Message text helpers: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { contentLength, continuesGroup, directPartner, formatSize, safeHref, titleWithUnread, tokenize, trimUrl } from "../../static/chat/text.js";

describe("tokenize", () => {
  it("keeps markup as plain text", () => {
    const tokens = tokenize("<script>alert(1)</script><img src=x onerror=alert(1)>");
    assert.deepEqual(tokens, [{ type: "text", text: "<script>alert(1)</script><img src=x onerror=alert(1)>" }]);
  });

  it("links only http and https", () => {
    const links = tokenize("a javascript:alert(1) b data:text/html,x c https://ok.example/x d http://also.example").filter((t) => t.type === "link");
    assert.deepEqual(links.map((t) => t.href), ["https://ok.example/x", "http://also.example/"]);
  });

  it("leaves trailing punctuation out of links but keeps balanced parentheses", () => {
    assert.equal(trimUrl("https://en.wikipedia.org/wiki/Foo_(bar))."), "https://en.wikipedia.org/wiki/Foo_(bar)");
    assert.equal(trimUrl("https://example.com/path,"), "https://example.com/path");
    const tokens = tokenize("看 https://example.com/页面，好");
    assert.deepEqual(tokens.map((t) => t.type), ["text", "link", "text"]);
    assert.equal(tokens[1].text, "https://example.com/页面");
  });

  it("a link cannot smuggle quotes or angle brackets", () => {
    const [link] = tokenize('https://example.com/"onmouseover="x').filter((t) => t.type === "link");
    assert.equal(link.text, "https://example.com/");
  });

  it("highlights only the mentions the server listed, marking one's own", () => {
    const tokens = tokenize("hi @bob and @alice, not @nobody or mail@bob.example", { mentions: ["bob", "alice"], me: "alice" });
    const mentions = tokens.filter((t) => t.type === "mention");
    assert.deepEqual(mentions.map((t) => [t.username, t.me]), [["bob", false], ["alice", true]]);
    assert.equal(tokens.map((t) => t.text).join(""), "hi @bob and @alice, not @nobody or mail@bob.example");
  });
});

describe("small helpers", () => {
  it("safeHref refuses other schemes", () => {
    assert.equal(safeHref("javascript:alert(1)"), null);
    assert.equal(safeHref("https://x.example/a b"), "https://x.example/a%20b");
  });

  it("formatSize", () => {
    assert.equal(formatSize(512), "512 B");
    assert.equal(formatSize(1536), "1.5 KB");
    assert.equal(formatSize(25 * 1024 * 1024), "25 MB");
  });

  it("groups consecutive messages of one author within minutes", () => {
    const a = { from: "bob", timestamp: Date.UTC(2026, 0, 1, 12), extra: { kind: "text" } };
    assert.ok(continuesGroup(a, { ...a, timestamp: a.timestamp + 60_000 }));
    assert.ok(!continuesGroup(a, { ...a, from: "carol" }));
    assert.ok(!continuesGroup(a, { ...a, timestamp: a.timestamp + 10 * 60_000 }));
    assert.ok(!continuesGroup(a, { ...a, extra: { kind: "text", replyTo: 4 } }));
  });

  it("counts code points after trimming, as the server does", () => {
    assert.equal(contentLength("  😀😀 "), 2);
  });

  it("names the other person of a direct room", () => {
    assert.equal(directPartner("alice, bob", "alice"), "bob");
    assert.equal(directPartner("alice, bob", "bob"), "alice");
  });

  it("puts the unread count in the title", () => {
    assert.equal(titleWithUnread("Lobby · Chat", 0), "Lobby · Chat");
    assert.equal(titleWithUnread("Lobby · Chat", 3), "(3) Lobby · Chat");
    assert.equal(titleWithUnread("Lobby · Chat", 150), "(99+) Lobby · Chat");
  });
});
