// Token entry: the team token lives in sessionStorage only (gone when the tab closes).

import { ApiError, get, setToken } from "../api.js";
import { el } from "../util.js";

export function mountToken(root, { notice, onDone }) {
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false", "aria-describedby": "token-help" });
  const status = el("p", { class: notice ? "error" : "", role: "alert", id: "token-status" }, notice || "");
  const form = el(
    "form",
    { class: "card narrow", "aria-labelledby": "token-title" },
    el("h1", { id: "token-title" }, "Team token"),
    el("p", { id: "token-help", class: "muted" }, "Paste the token an admin made with ", el("code", {}, "secateurs token create --team NAME"), ". It is kept in this tab's session storage only."),
    el("label", { for: "token" }, "Token"),
    input,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Continue")),
    status,
  );
  form.addEventListener("submit", async (evt) => {
    evt.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    setToken(token);
    status.className = "muted";
    status.textContent = "Checking…";
    try {
      const me = await get("/v1/me");
      sessionStorage.setItem("secateurs.team", me && me.team ? me.team : "");
      onDone();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return; // the 401 handler re-renders this view
      status.className = "error";
      status.textContent = `Could not check the token: ${err.message}`;
    }
  });
  root.append(form);
  input.focus();
  return () => {};
}
