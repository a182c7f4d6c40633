// make run's login link carries the token in the #fragment, which no request sends. Without a session it logs
// in at once; with one it only fills the form and asks "Log in as NAME?" (a link from someone else must not
// switch this browser to their user silently: login CSRF).
(function () {
  "use strict";
  const match = /^#token=(.+)$/.exec(window.location.hash);
  if (!match) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  const token = decodeURIComponent(match[1]);
  const form = document.getElementById("login-form");
  document.getElementById("token").value = token;
  const current = document.getElementById("current-user");
  if (!current) {
    form.submit();
    return;
  }
  const ask = document.getElementById("switch-user");
  const button = document.getElementById("login-submit");
  ask.hidden = false;
  ask.textContent = "You are logged in as " + current.textContent.trim() + ". This link logs in with another token.";
  button.textContent = "Log in with this token?";
  fetch("/api/me", {headers: {Authorization: "Bearer " + token}, credentials: "omit", cache: "no-store"})
    .then((response) => (response.ok ? response.json() : null))
    .then((me) => {
      if (me) button.textContent = "Log in as " + me.user.name + "?";
    })
    .catch(() => {});
})();
