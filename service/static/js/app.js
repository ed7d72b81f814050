// The dashboard's entry point: routes the URL fragment (#/jobs, #/jobs/ID, #/submit, #/token)
// to a view, and sends the user to token entry when there is no token or the API answers 401.

import { getToken, loadChoices, setToken, setUnauthorizedHandler } from "./api.js";
import { setScoreLabels, setStatuses } from "./model.js";
import { el } from "./util.js";
import { mountJobs } from "./views/jobs.js";
import { mountJob } from "./views/job.js";
import { mountSubmit } from "./views/submit.js";
import { mountToken } from "./views/token.js";

const main = document.getElementById("main");
let unmount = null;
let tokenNotice = "";

function parseRoute() {
  const parts = location.hash.split("?")[0].replace(/^#\/?/, "").split("/").filter(Boolean);
  if (parts[0] === "jobs" && parts[1]) return { view: "job", id: decodeURIComponent(parts[1]) };
  if (parts[0] === "submit") return { view: "submit" };
  if (parts[0] === "token") return { view: "token" };
  return { view: "jobs" };
}

function render() {
  if (unmount) unmount();
  unmount = null;
  main.replaceChildren();
  let route = parseRoute();
  if (!getToken() && route.view !== "token") {
    sessionStorage.setItem("secateurs.next", location.hash || "#/jobs");
    route = { view: "token" };
  }
  document.getElementById("signout").hidden = route.view === "token";
  const team = sessionStorage.getItem("secateurs.team");
  document.getElementById("conn").textContent = route.view !== "token" && team ? `team ${team}` : "";
  for (const a of document.querySelectorAll("[data-nav]")) {
    const current = a.dataset.nav === route.view || (a.dataset.nav === "jobs" && route.view === "job");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (route.view === "token") {
    const notice = tokenNotice;
    tokenNotice = "";
    unmount = mountToken(main, { notice, onDone: goNext });
  } else if (route.view === "job") unmount = mountJob(main, route.id);
  else if (route.view === "submit") unmount = mountSubmit(main);
  else unmount = mountJobs(main);
}

// After a token is accepted: back to where the user was going (re-render if the URL is already there).
function goNext() {
  const next = sessionStorage.getItem("secateurs.next") || "#/jobs";
  sessionStorage.removeItem("secateurs.next");
  const target = next.startsWith("#/token") ? "#/jobs" : next;
  if (location.hash === target) render();
  else location.hash = target;
}

setUnauthorizedHandler(() => {
  setToken("");
  tokenNotice = "The API did not accept the token (401). Enter a valid team token.";
  if (!location.hash.startsWith("#/token")) sessionStorage.setItem("secateurs.next", location.hash || "#/jobs");
  if (location.hash === "#/token") render();
  else location.hash = "#/token";
});

document.getElementById("signout").addEventListener("click", () => {
  setToken("");
  location.hash = "#/token";
});

// The job statuses come from the server before the first view draws.
loadChoices().then(
  (choices) => {
    setStatuses(choices);
    setScoreLabels(choices);
    window.addEventListener("hashchange", render);
    render();
  },
  (err) => {
    main.replaceChildren(el("p", { class: "error-box", role: "alert" }, `The dashboard could not start: ${err.message}. Reload the page to try again.`));
  },
);
