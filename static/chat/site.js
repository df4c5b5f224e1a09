/**
 * Every page: the language menu switches as soon as a language is picked (the button stays
 * for browsers without scripts).
 */
for (const form of document.querySelectorAll(".language-form")) {
  const select = form.querySelector("select");
  form.querySelector(".language-submit")?.classList.add("visually-hidden");
  select?.addEventListener("change", () => form.requestSubmit());
}
