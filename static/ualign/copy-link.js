// The study page's "Copy" buttons beside the participant links (issue #25). A static file, no
// inline script, so the Content-Security-Policy stays script-src 'self'.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.copy-link") : null;
    if (!button) return;
    var text = button.getAttribute("data-copy") || "";
    var done = function () {
      button.textContent = "Copied";
      window.setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { window.prompt("Copy the link:", text); });
    } else {
      window.prompt("Copy the link:", text);
    }
  });
})();
