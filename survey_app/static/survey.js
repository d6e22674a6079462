// Progressive enhancement of the trial page: keyboard shortcuts, response time measured in
// the page, viewport size, and one submission per trial. The form works without this file.
(function () {
  "use strict";
  var form = document.getElementById("trial-form");
  if (!form) { return; }
  var t0 = performance.now();
  var sent = false;
  // The clock starts when both images are on screen (or at script start if already loaded).
  window.addEventListener("load", function () { t0 = performance.now(); });
  function fill() {
    document.getElementById("rt_ms").value = String(Math.round(performance.now() - t0));
    document.getElementById("vw").value = String(Math.max(1, window.innerWidth));
    document.getElementById("vh").value = String(Math.max(1, window.innerHeight));
  }
  form.addEventListener("submit", function (ev) {
    if (sent) { ev.preventDefault(); return; }
    sent = true;
    fill();
  });
  function choose(id) {
    var button = document.getElementById(id);
    if (!button || sent) { return; }
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    if (ev.key === "ArrowLeft" || ev.key === "1") { ev.preventDefault(); choose("choose-left"); }
    if (ev.key === "ArrowRight" || ev.key === "2") { ev.preventDefault(); choose("choose-right"); }
  });
})();
