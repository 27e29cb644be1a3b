/* gradscope report: sortable tables, expand/collapse, the embedded record. No network, no server. */
(function () {
  "use strict";
  var errors = window.__gradscopeErrors || [];

  function showErrors() {
    var box = document.getElementById("js-errors");
    document.body.setAttribute("data-errors", String(errors.length));
    if (!box || !errors.length) { return; }
    box.hidden = false;
    box.textContent = "This page hit a script error: " + errors.join("; ");
  }

  function cellKey(row, index) {
    var cell = row.cells[index];
    if (!cell) { return ""; }
    var v = cell.getAttribute("data-v");
    return v !== null ? v : cell.textContent.trim();
  }

  function sortBy(table, index, header) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var numeric = rows.every(function (r) {
      var k = cellKey(r, index);
      return k === "" || !isNaN(Number(k));
    });
    rows.sort(function (a, b) {
      var x = cellKey(a, index), y = cellKey(b, index), d;
      if (numeric) {
        x = x === "" ? -Infinity : Number(x);
        y = y === "" ? -Infinity : Number(y);
        d = x < y ? -1 : (x > y ? 1 : 0);
      } else {
        d = x.localeCompare(y, undefined, { numeric: true });
      }
      return ascending ? d : -d;
    });
    Array.prototype.forEach.call(header.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var fragment = document.createDocumentFragment();
    rows.forEach(function (r) { fragment.appendChild(r); });
    body.appendChild(fragment);
  }

  function setupSorting() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      if (!table.tHead) { return; }
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
        header.setAttribute("tabindex", "0");
        header.setAttribute("title", "Sort by this column");
        var go = function () { sortBy(table, index, header); };
        header.addEventListener("click", go);
        header.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
      });
    });
  }

  /* "#sort=TABLE:COLUMN:asc|desc" in the address sorts a table on load (a shareable view). */
  function sortFromAddress() {
    var match = /^#sort=([\w-]+):(\d+)(?::(asc|desc))?$/.exec(window.location.hash || "");
    if (!match) { return; }
    var table = document.getElementById("table-" + match[1]);
    if (!table || !table.tHead) { return; }
    var header = table.tHead.rows[0].cells[Number(match[2])];
    if (!header) { return; }
    sortBy(table, Number(match[2]), header);
    if (match[3] === "desc") { sortBy(table, Number(match[2]), header); }
  }

  function setupToggles() {
    var all = function (open) {
      Array.prototype.forEach.call(document.querySelectorAll("details.section"), function (d) { d.open = open; });
    };
    var expand = document.getElementById("expand-all");
    var collapse = document.getElementById("collapse-all");
    if (expand) { expand.addEventListener("click", function () { all(true); }); }
    if (collapse) { collapse.addEventListener("click", function () { all(false); }); }
    Array.prototype.forEach.call(document.querySelectorAll("nav.toc a[href^='#']"), function (a) {
      a.addEventListener("click", function () {
        var target = document.getElementById(a.getAttribute("href").slice(1));
        if (target && target.tagName === "DETAILS") { target.open = true; }
      });
    });
  }

  function setupRecord() {
    var holder = document.getElementById("gradscope-record");
    if (!holder) { return; }
    var text = holder.textContent;
    var data = JSON.parse(text);   /* a page whose record does not parse is a broken page */
    var keys = document.getElementById("record-keys");
    if (keys) { keys.textContent = Object.keys(data).length + " top-level keys"; }
    var button = document.getElementById("download-record");
    if (button && window.Blob && window.URL && URL.createObjectURL) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var link = document.createElement("a");
        link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
        link.download = button.getAttribute("data-name") || "record.json";
        document.body.appendChild(link);
        link.click();
        link.remove();
      });
    }
  }

  function start() {
    try {
      setupSorting();
      sortFromAddress();
      setupToggles();
      setupRecord();
    } catch (e) {
      errors.push(String(e && e.message ? e.message : e));
    }
    showErrors();
    if (!errors.length) { document.body.setAttribute("data-ready", "1"); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
