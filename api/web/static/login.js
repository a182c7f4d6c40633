// The login page: a token is checked with /api/me (in an Authorization header) and kept in this tab's
// sessionStorage, which belongs to this origin alone (port included): no cookie, nothing another port sees.
// make run's login link carries the token in the #fragment, which no request sends. Without a token kept it logs
// in at once; with one it only fills the form and asks "Log in as NAME?" (a link from someone else must not
// switch this tab to their user silently: login CSRF).
(function () {
  "use strict";
  const KEY = "trainq.token";
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-submit");

  function me(token) {
    return fetch("/api/me", {headers: {Authorization: `Bearer ${token}`}, credentials: "omit", cache: "no-store"})
      .then(async (response) => ({response, body: await response.json().catch(() => ({}))}));
  }

  async function logIn(token) {
    error.hidden = true;
    const {response, body} = await me(token);
    if (response.ok && body.token.scope !== "all") {
      error.textContent = `Not logged in: a token with scope '${body.token.scope}' cannot log in to the monitor.`;
    } else if (response.ok) {
      window.sessionStorage.setItem(KEY, token);
      window.location.assign(form.dataset.next);
      return;
    } else {
      error.textContent = `Not logged in: ${(body.error && body.error.message) || `HTTP ${response.status}`}.`;
    }
    error.hidden = false;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (token) logIn(token).catch((err) => {
      error.textContent = `Cannot reach the service (${err.message}).`;
      error.hidden = false;
    });
  });

  const match = /^#token=(.+)$/.exec(window.location.hash);
  if (!match) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  const token = decodeURIComponent(match[1]);
  input.value = token;
  const current = window.sessionStorage.getItem(KEY);
  if (!current) {
    form.requestSubmit();
    return;
  }
  const ask = document.getElementById("switch-user");
  ask.hidden = false;
  ask.textContent = "This tab is logged in already. This link logs in with another token.";
  button.textContent = "Log in with this token?";
  Promise.all([me(current), me(token)]).then(([now, next]) => {
    if (now.response.ok) {
      ask.textContent = `You are logged in as ${now.body.user.name}. This link logs in with another token.`;
    }
    if (next.response.ok) button.textContent = `Log in as ${next.body.user.name}?`;
  }).catch(() => {});
})();
