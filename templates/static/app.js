// Ekart's pages work without this script; it adds live search, the session clock, times in
// the shopper's own time zone, the payment form's per-mode fields, and the click-stream (each page view and each click on a
// control marked data-track, sent with navigator.sendBeacon to /track).
(function () {
  "use strict";

  function beacon(data) {
    var body = JSON.stringify(data);
    if (navigator.sendBeacon && navigator.sendBeacon("/track", body)) return;
    fetch("/track", { method: "POST", body: body, keepalive: true }).catch(function () {});
  }

  function pageTitle() {
    return document.title.replace(/ · Ekart$/, "");
  }

  document.addEventListener("click", function (event) {
    var el = event.target.closest && event.target.closest("[data-track]");
    if (!el || el.disabled) return;
    var label = el.getAttribute("data-track-label") || "";
    var form = el.form || el.closest("form");
    var qty = form && form.querySelector("input[name=quantity]");
    if (el.getAttribute("data-track") === "add-to-cart" && qty) label += " ×" + qty.value;
    beacon({ type: "click", action: el.getAttribute("data-track"), label: label, path: location.pathname });
  });

  // "started 3 min ago", kept current.
  function ago(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function tick() {
    document.querySelectorAll("[data-session-started]").forEach(function (el) {
      var start = Number(el.getAttribute("data-session-started"));
      if (start > 0) el.textContent = "started " + ago(Date.now() - start) + " ago";
    });
  }

  // Moments in the shopper's own time zone: the server writes them in UTC ("5 Dec 2026,
  // 04:48 UTC") with the exact instant in each <time datetime>.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at.getTime())) return;
      el.title = el.textContent;
      el.textContent = at.toLocaleString(undefined, {
        dateStyle: "medium",
        timeStyle: el.classList.contains("when") ? "medium" : "short",
      });
    });
  }
  localTimes(document);

  // Search as you type: fetch the same page for the new query and swap in its results.
  function liveSearch(form) {
    var target = document.querySelector(form.getAttribute("data-live-search"));
    var input = form.querySelector("input[type=search]");
    if (!target || !input) return;
    var timer, seq = 0;
    function run() {
      var url = form.getAttribute("action") + "?" + new URLSearchParams(new FormData(form)).toString();
      var mine = ++seq;
      fetch(url, { headers: { Accept: "text/html" } })
        .then(function (r) { return r.text(); })
        .then(function (html) {
          if (mine !== seq) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.querySelector(form.getAttribute("data-live-search"));
          if (fresh) target.innerHTML = fresh.innerHTML;
          history.replaceState(null, "", url);
          if (input.hasAttribute("data-track-search") && input.value.trim()) {
            beacon({ type: "click", action: "search", label: input.value.trim(), path: location.pathname });
          }
        })
        .catch(function () {});
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(run, 250);
    });
    form.querySelectorAll("select").forEach(function (s) { s.addEventListener("change", run); });
  }

  // Checkout: show only the chosen payment mode's fields.
  function paymentModes(form) {
    var radios = form.querySelectorAll("input[name=payment_mode]");
    function show() {
      var chosen = form.querySelector("input[name=payment_mode]:checked");
      var mode = chosen ? chosen.value : "";
      form.querySelectorAll(".mode-fields").forEach(function (fs) {
        var on = fs.getAttribute("data-mode").split(" ").indexOf(mode) >= 0;
        fs.hidden = !on;
        fs.disabled = !on;
      });
    }
    radios.forEach(function (r) { r.addEventListener("change", show); });
    show();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var query = new URLSearchParams(location.search);
    query.delete("notice");
    var path = location.pathname + (query.toString() ? "?" + query.toString() : "");
    beacon({ type: "page", path: path, title: pageTitle() });
    tick();
    setInterval(tick, 1000);
    document.querySelectorAll("form[data-live-search]").forEach(liveSearch);
    document.querySelectorAll("form.checkout").forEach(paymentModes);
    document.body.classList.add("js");
  });
})();
