// The nurses' console: refresh the live part every 2 s, post the patient actions.
// No library and no build: served by the agent as it is.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var lost = document.getElementById("lost");
  var message = document.getElementById("action-message");
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var lang = live.getAttribute("data-lang");
  var revealed = document.getElementById("revealed");
  var revealedFor = null;
  var hideTimer = null;

  // The whole identifier only on the nurse's request, for REVEAL_MS, and never once the
  // open patient changed; the page itself shows it masked.
  var REVEAL_MS = 30000;
  function hide() {
    if (revealed) { revealed.textContent = ""; revealed.hidden = true; }
    revealedFor = null;
  }
  function openEncounter() {
    var text = document.getElementById("patient-text");
    return text ? text.getAttribute("data-encounter") : "";
  }

  function ticked() {
    return Array.prototype.map.call(live.querySelectorAll('input[name="reading"]:checked'),
      function (box) { return box.value; });
  }

  function refresh() {
    var keep = ticked();
    fetch("/live?lang=" + encodeURIComponent(lang), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        live.innerHTML = html;
        keep.forEach(function (id) {
          var box = live.querySelector('input[name="reading"][value="' + CSS.escape(id) + '"]');
          if (box) { box.checked = true; }
        });
        lost.hidden = true;
        if (revealedFor !== null && openEncounter() !== revealedFor) { hide(); }
      })
      .catch(function () { lost.hidden = false; });
  }

  function post(form) {
    var body = new URLSearchParams(new FormData(form));
    return fetch(form.getAttribute("data-action") + "?lang=" + encodeURIComponent(lang), {
      method: "POST", credentials: "same-origin", body: body,
      headers: {"X-CSRF-Token": csrf}
    }).then(function (r) { return r.json(); }).then(function (answer) {
      message.textContent = answer.message;
      message.className = "message" + (answer.ok ? "" : " error");
      if (answer.ok && form.id === "open-form") { form.reset(); }
      if (form.id === "reveal-form") {
        if (answer.ok && revealed) {
          revealed.textContent = answer.identifier;
          revealed.hidden = false;
          revealedFor = openEncounter();
          clearTimeout(hideTimer);
          hideTimer = setTimeout(hide, REVEAL_MS);
        }
        return;
      } else { hide(); }
      if (answer.ok) { refresh(); }
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.getAttribute("data-action")) {
      event.preventDefault();
      post(form);
    }
  });
  setInterval(refresh, 2000);
})();
