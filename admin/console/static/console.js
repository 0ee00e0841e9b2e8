// The idemq console's only script. The pages work without it; it adds
// "select the page" checkboxes and tells the server the browser's time
// zone, so that times are shown in the operator's zone.
(function () {
  "use strict";
  document.querySelectorAll("input.select-all").forEach(function (all) {
    all.addEventListener("change", function () {
      var form = all.form;
      if (!form) return;
      form.querySelectorAll('input[type=checkbox][name=id]:not(:disabled)').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
  if (!zone || zone === document.body.dataset.zone) return;
  document.cookie = "idemq_tz=" + encodeURIComponent(zone) + "; path=/; SameSite=Strict; max-age=31536000";
  // Show this page in the browser's zone too, unless it answers a form
  // (reloading it would send the form again).
  if (!document.body.dataset.posted && !sessionStorage.getItem("idemq-tz-reloaded")) {
    sessionStorage.setItem("idemq-tz-reloaded", "1");
    document.location.reload();
  }
})();
