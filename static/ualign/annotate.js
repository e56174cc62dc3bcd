// The annotator's task page: keys 1–9 pick, focus follows the swapped-in task, and a pick
// that lands during a swap (a double click or a doubled key press) never hits the next task.
// Everything here is progressive enhancement: without it the buttons post the form as usual.
(function () {
  "use strict";
  var SETTLE_MS = 350;

  // A step shown in the answer to the previous step's form (join, consent, instructions: one round
  // trip, no redirect) names its own address: put it in the address bar, so that a reload or a
  // bookmark asks for the step itself instead of sending the form again.
  var canonical = document.querySelector('link[rel="canonical"]');
  if (canonical && window.history.replaceState) {
    var here = new URL(canonical.href, window.location.href);
    if (here.origin === window.location.origin && here.pathname !== window.location.pathname) {
      window.history.replaceState(window.history.state, "", here.pathname);
    }
  }

  function comparison() { return document.getElementById("comparison"); }

  // A task takes picks once it has settled: `data-ready` says so (browser tests wait for it; a
  // click before it is swallowed below, so waiting for "not settling" alone could race the swap).
  function settle(section) {
    section.removeAttribute("data-ready");
    section.setAttribute("data-settling", "");
    window.setTimeout(function () {
      section.removeAttribute("data-settling");
      section.setAttribute("data-ready", "");
    }, SETTLE_MS);
  }

  function markLoadedTaskReady() {  // a task in the page as loaded was never swapped in
    var section = comparison();
    if (section && !section.hasAttribute("data-settling")) section.setAttribute("data-ready", "");
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", markLoadedTaskReady);
  } else {
    markLoadedTaskReady();
  }

  document.addEventListener("keydown", function (event) {
    if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
    if (!/^[1-9]$/.test(event.key)) return;
    var target = event.target;
    if (target && target.closest && target.closest("textarea, input, select, [contenteditable]")) return;
    var section = comparison();
    if (!section || section.hasAttribute("data-settling")) return;
    var button = section.querySelector('button.pick[value="' + event.key + '"]');
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();  // a click, so htmx sends the button's name and value
  });

  // Swallow clicks on a task that has only just appeared.
  document.addEventListener("click", function (event) {
    var section = comparison();
    if (section && section.hasAttribute("data-settling") && section.contains(event.target) &&
        event.target.closest("button")) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);

  document.addEventListener("htmx:afterSettle", function (event) {
    // With an outerHTML swap the event fires on the new #comparison (the old one is gone).
    var section = comparison();
    if (!section || !(event.target === section || section.contains(event.target))) return;
    settle(section);
    var heading = document.getElementById("task-heading");
    if (heading) {
      heading.focus({ preventScroll: true });
      section.scrollIntoView({ block: "start", behavior: "instant" });
    }
  });

  // Failed requests (connection lost, 5xx) are said in the page by htmx-errors.js.

  // Back (or Forward) to a task page kept in the back-forward cache would show a task already
  // answered: ask the server for the current one instead (the pages are also sent no-store).
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && comparison()) window.location.reload();
  });

  // The completion page: go back to the recruiting site after a countdown the person can stop.
  document.addEventListener("DOMContentLoaded", function () {
    var link = document.querySelector("[data-auto-redirect]");
    var note = document.getElementById("redirect-note");
    if (!link || !note) return;
    var left = parseInt(link.getAttribute("data-auto-redirect"), 10) || 5;
    var counter = note.querySelector("[data-countdown]");
    note.hidden = false;
    var timer = window.setInterval(function () {
      left -= 1;
      if (counter) counter.textContent = String(left);
      if (left <= 0) { window.clearInterval(timer); window.location.assign(link.href); }
    }, 1000);
    note.querySelector("[data-cancel-redirect]").addEventListener("click", function () {
      window.clearInterval(timer);
      note.textContent = "Automatic redirect stopped. Use the button above when you are ready.";
    });
  });
})();
