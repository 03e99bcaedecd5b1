// Keyboard triage of the steward console (no build step: served as is).
// Queue: j/k next/previous row, l link, a keep apart, s skip, Enter open.
// Item page: l, a, s press the buttons marked with data-key.
(function () {
  "use strict";
  function openRows() {
    return Array.prototype.slice.call(
      document.querySelectorAll("#queue tr.item:not(.done):not(.skipped)"));
  }
  function current() { return document.querySelector("#queue tr.item.current"); }
  function select(row) {
    var cur = current();
    if (cur) { cur.classList.remove("current"); }
    if (row) { row.classList.add("current"); row.scrollIntoView({ block: "nearest" }); }
  }
  // The first open row after `row` (or before it, at the end of the list).
  function nextOpen(row) {
    for (var r = row && row.nextElementSibling; r; r = r.nextElementSibling) {
      if (r.matches("tr.item:not(.done):not(.skipped)")) { return r; }
    }
    var open = openRows();
    return open.length ? open[open.length - 1] : null;
  }
  function move(step) {
    var rows = openRows();
    if (!rows.length) { return; }
    var at = rows.indexOf(current());
    var to = Math.min(rows.length - 1, Math.max(0, at < 0 ? 0 : at + step));
    select(rows[to]);
  }
  var pending = null;
  function decide(kind) {
    var cur = current();
    if (!cur) { return; }
    var button = cur.querySelector("form." + kind + " button");
    if (!button) { return; }
    pending = cur.dataset.id;
    button.click();
  }
  document.addEventListener("htmx:afterSettle", function () {
    if (pending === null) { return; }
    var done = document.getElementById("item-" + pending);
    pending = null;
    select(nextOpen(done));
  });
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.target.closest("input, textarea, select")) { return; }
    if (document.getElementById("queue")) {
      switch (e.key) {
        case "j": move(1); break;
        case "k": move(-1); break;
        case "l": decide("link"); break;
        case "a": decide("keep_apart"); break;
        case "s": {
          var cur = current();
          if (cur) { cur.classList.add("skipped"); select(nextOpen(cur)); }
          break;
        }
        case "Enter": { var c = current(); if (c) { window.location = c.dataset.href; } break; }
        default: return;
      }
      e.preventDefault();
      return;
    }
    var target = document.querySelector("#actions [data-key='" + e.key + "']");
    if (target) { e.preventDefault(); target.click(); }
  });
})();
