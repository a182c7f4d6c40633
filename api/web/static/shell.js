// A page's shell: the server answers a navigation (which carries no credential: there is no cookie) with this
// script and no data. It fetches the same URL with the token this tab keeps in sessionStorage (per origin, so no
// other port of this host ever sees it) and puts the page that comes back in place of the shell. No token, or a
// refused one: the login page, and back here after it.
(function () {
  "use strict";
  const KEY = "trainq.token";
  const here = window.location.pathname + window.location.search;
  const status = document.getElementById("shell-status");
  function toLogin() {
    window.location.replace(`/login?next=${encodeURIComponent(here)}`);
  }
  const token = window.sessionStorage.getItem(KEY);
  if (!token) {
    toLogin();
    return;
  }
  // rq-dashboard's pages run an inline script: it carries this shell's CSP nonce, which the server reuses
  const headers = {Authorization: `Bearer ${token}`, Accept: "text/html", "X-Shell-Nonce": document.currentScript.nonce};
  fetch(here, {headers, cache: "no-store", credentials: "omit"}).then(async (response) => {
    if (response.status === 401) {
      window.sessionStorage.removeItem(KEY);
      toLogin();
      return;
    }
    const type = response.headers.get("Content-Type") || "";
    if (!type.startsWith("text/html")) {
      const body = await response.json().catch(() => ({}));
      status.textContent = (body.error && body.error.message) || `HTTP ${response.status}`;
      status.className = "form-error";
      return;
    }
    const html = await response.text();
    if (response.redirected) {
      const url = new URL(response.url);
      window.history.replaceState(null, "", url.pathname + url.search + window.location.hash);
    }
    document.open();
    document.write(html);
    document.close();
  }).catch((err) => {
    status.textContent = `Cannot reach the service (${err.message}); reload to try again.`;
    status.className = "form-error";
  });
})();
