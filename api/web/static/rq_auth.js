// rq-dashboard's pages call its JSON routes with jQuery: each call carries this tab's token (there is no cookie).
// A refused token (revoked, expired) sends the tab to the login page, and back.
"use strict";
(function () {
  const token = window.sessionStorage.getItem("trainq.token");
  $.ajaxSetup({headers: token ? {Authorization: `Bearer ${token}`} : {}});
  $(document).ajaxError((event, xhr) => {
    if (xhr.status === 401) {
      window.sessionStorage.removeItem("trainq.token");
      const here = window.location.pathname + window.location.search;
      window.location.assign(`/login?next=${encodeURIComponent(here)}`);
    }
  });
})();
