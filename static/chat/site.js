/**
 * Every page: the language menu switches as soon as a language is picked (the button stays
 * for browsers without scripts).
 */
for (const form of document.querySelectorAll(".language-form")) {
  const select = form.querySelector("select");
  const submit = form.querySelector(".language-submit");
  if (submit) submit.hidden = true;
  select?.addEventListener("change", () => form.requestSubmit());
}
