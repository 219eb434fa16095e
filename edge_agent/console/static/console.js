// The nurses' console: refresh the live part every 2 s, post the patient actions.
// No library and no build: served by the agent as it is.
// A request the agent does not answer within ANSWER_MS (a frozen agent keeps the connection
// open and never answers) is given up, and the whole page turns grey under a banner that is
// announced (role="alert"): green tiles from before must not stay on screen as if current.
// The same when the page answers but the agent itself does not (a console run on its own).
(function () {
  "use strict";
  var live = document.getElementById("live");
  var lost = document.getElementById("lost");
  var message = document.getElementById("action-message");
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var lang = live.getAttribute("data-lang");
  var ANSWER_MS = 4000;
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

  function answered(ok) {
    document.body.classList.toggle("unanswered", !ok);
    live.setAttribute("aria-hidden", ok ? "false" : "true");
    lost.hidden = ok;
  }

  function fetchWithin(url, options) {
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, ANSWER_MS);
    options.signal = controller.signal;
    return fetch(url, options).finally(function () { clearTimeout(timer); });
  }

  function ticked() {
    return Array.prototype.map.call(live.querySelectorAll('input[name="reading"]:checked'),
      function (box) { return box.value; });
  }

  function refresh() {
    var keep = ticked();
    return fetchWithin("/live?lang=" + encodeURIComponent(lang),
                {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        live.innerHTML = html;
        keep.forEach(function (id) {
          var box = live.querySelector('input[name="reading"][value="' + CSS.escape(id) + '"]');
          if (box) { box.checked = true; }
        });
        var agent = live.querySelector("#agent-answer");
        answered(!agent || agent.getAttribute("data-answering") === "yes");
        if (revealedFor !== null && openEncounter() !== revealedFor) { hide(); }
      })
      .catch(function () { answered(false); });
  }

  function post(form) {
    var body = new URLSearchParams(new FormData(form));
    return fetchWithin(form.getAttribute("data-action") + "?lang=" + encodeURIComponent(lang), {
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
    }).catch(function () { answered(false); });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.getAttribute("data-action")) {
      event.preventDefault();
      post(form);
    }
  });
  var first = live.querySelector("#agent-answer");
  if (first && first.getAttribute("data-answering") !== "yes") { answered(false); }
  // The next poll 2 s after this one ends: a frozen agent does not pile requests up.
  function poll() { refresh().finally(function () { setTimeout(poll, 2000); }); }
  setTimeout(poll, 2000);
})();
