/**
 * Translation functions from Django's JavaScript catalog (/jsi18n/, loaded before the modules).
 * Outside a page (Node tests) they fall back to the English source text.
 */
const g = globalThis;

export function gettext(msgid) {
  return typeof g.gettext === "function" ? g.gettext(msgid) : msgid;
}

export function ngettext(singular, plural, count) {
  if (typeof g.ngettext === "function") return g.ngettext(singular, plural, count);
  return count === 1 ? singular : plural;
}

export function pgettext(context, msgid) {
  return typeof g.pgettext === "function" ? g.pgettext(context, msgid) : msgid;
}

/** Named interpolation, as Django's: interpolate("%(name)s is typing…", {name}). */
export function interpolate(format, values) {
  return format.replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
}

/** The page's language (the <html lang>), for dates and numbers. */
export function pageLanguage() {
  return g.document?.documentElement?.lang || "en";
}
