// When an htmx request fails, say so in the page (loaded with htmx by templates/htmx.html).
// A pick is saved in one transaction and only once, so the message is always the same promise:
// the picks so far are saved, try again in a minute. On the task page it goes in the form's
// [data-connection-error] slot (the buttons are enabled again, so the person can pick again);
// elsewhere (the results page, the admin's job list) in a banner at the top of <main>.
(function () {
  "use strict";
  var SAVED = "Your picks so far are saved.";

  function messageFor(event) {
    var xhr = event.detail && event.detail.xhr;
    var status = event.type === "htmx:sendError" || !xhr ? 0 : xhr.status;
    if (status === 0) {
      return "Your choice could not be sent (connection problem). " + SAVED +
        " Please try again in a minute: a choice is only ever saved once.";
    }
    if (status === 404) return "This task is no longer available. " + SAVED + " Please reload the page.";
    if (status === 400 || status === 403) return "This page has expired. " + SAVED + " Please reload the page.";
    return "The study is briefly unavailable. " + SAVED + " Please try again in a minute.";
  }

  function slotFor(element) {
    var region = element && element.closest ? element.closest("#comparison") : null;
    var slot = region ? region.querySelector("[data-connection-error]") : null;
    if (slot) return slot;
    slot = document.getElementById("htmx-error");
    if (!slot) {
      slot = document.createElement("p");
      slot.id = "htmx-error";
      slot.className = "error htmx-error";
      slot.setAttribute("role", "alert");
      var main = document.querySelector("main") || document.body;
      main.insertBefore(slot, main.firstChild);
    }
    return slot;
  }

  function show(event) {
    var slot = slotFor(event.target);
    slot.textContent = messageFor(event);
    slot.hidden = false;
  }

  document.addEventListener("htmx:sendError", show);
  document.addEventListener("htmx:responseError", show);
  document.addEventListener("htmx:afterRequest", function (event) {
    if (!event.detail.successful) return;
    var banner = document.getElementById("htmx-error");
    if (banner) banner.hidden = true;
  });
})();
