// Orchestra dashboard: sorting and filtering the tables, the front's hover and click, and live
// updates (the page asks the server for its version every second and, when it changed, fetches
// its main part again). Everything works without this script but the live part.
"use strict";
(function () {
  const state = {}; // per table id: {col, dir, filters}

  function cellValue(row, col, numeric) {
    const cell = row.children[col];
    if (!cell) return "";
    if (!numeric) return cell.textContent.trim().toLowerCase();
    const v = parseFloat(cell.dataset.s !== undefined ? cell.dataset.s : cell.textContent);
    return isNaN(v) ? null : v;
  }

  function applySort(table) {
    const st = state[table.id];
    if (!st || st.col === undefined) return;
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    const numeric = table.tHead.rows[0].cells[st.col].hasAttribute("data-num");
    rows.sort(function (a, b) {
      const x = cellValue(a, st.col, numeric), y = cellValue(b, st.col, numeric);
      if (x === null && y === null) return 0;
      if (x === null) return 1; // missing values last, whichever way
      if (y === null) return -1;
      const c = x < y ? -1 : x > y ? 1 : 0;
      return st.dir === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll("thead th").forEach(function (th, i) {
      th.setAttribute("aria-sort", i === st.col ? st.dir : "none");
    });
  }

  function applyFilters(box) {
    const table = document.getElementById(box.dataset.table);
    if (!table) return;
    const f = {};
    box.querySelectorAll("[data-filter]").forEach(function (el) { f[el.dataset.filter] = el.value.trim(); });
    state[table.id] = Object.assign(state[table.id] || {}, { filters: f });
    let shown = 0;
    Array.from(table.tBodies[0].rows).forEach(function (r) {
      const cell = function (i) { return r.children[i].textContent.trim(); };
      const ok = (!f.v || cell(1) === f.v) && (!f.p || cell(3) === f.p) &&
        (!f.t || r.dataset.t.indexOf(f.t) >= 0);
      r.hidden = !ok;
      if (ok) shown++;
    });
    const count = box.querySelector(".count");
    if (count) count.textContent = shown + " of " + table.tBodies[0].rows.length + " trials";
  }

  function restore() {
    document.querySelectorAll("table.sortable").forEach(function (t) { applySort(t); });
    document.querySelectorAll(".filters[data-table]").forEach(function (box) {
      const st = state[box.dataset.table];
      if (st && st.filters) {
        box.querySelectorAll("[data-filter]").forEach(function (el) {
          if (st.filters[el.dataset.filter] !== undefined) el.value = st.filters[el.dataset.filter];
        });
        applyFilters(box);
      }
    });
  }

  document.addEventListener("click", function (e) {
    const b = e.target.closest("thead th button[data-col]");
    if (b) {
      const table = b.closest("table");
      const col = parseInt(b.dataset.col, 10);
      const st = state[table.id] = state[table.id] || {};
      st.dir = st.col === col && st.dir === "descending" ? "ascending" : "descending";
      st.col = col;
      applySort(table);
      return;
    }
    const pt = e.target.closest("use[data-t]");
    if (pt && !pt.closest("a")) location.href = "trials/" + encodeURIComponent(pt.dataset.t) + "/";
  });
  document.addEventListener("input", function (e) {
    const box = e.target.closest(".filters[data-table]");
    if (box) applyFilters(box);
  });
  document.addEventListener("change", function (e) {
    if (e.target.matches("select[data-autosubmit]")) e.target.form.submit();
    const box = e.target.closest(".filters[data-table]");
    if (box) applyFilters(box);
  });

  // The front: a point's trial row, shown beside the pointer (or the focused link).
  const tip = document.getElementById("tip");
  let lit = null;
  function show(pt, x, y) {
    const row = document.querySelector('#trials tr[data-t="' + CSS.escape(pt.dataset.t) + '"]');
    if (!row || !tip) return;
    const heads = Array.from(document.querySelectorAll("#trials thead th")).map(function (h) { return h.textContent; });
    const cells = Array.from(row.children);
    const pick = [0, 1, 2, 3, 5, 7];
    tip.innerHTML = "";
    pick.forEach(function (i) {
      const line = document.createElement("div");
      line.textContent = heads[i] + ": " + cells[i].textContent;
      tip.appendChild(line);
    });
    tip.style.left = (x + 14) + "px";
    tip.style.top = (y + 14) + "px";
    tip.hidden = false;
    if (lit) lit.classList.remove("hl");
    lit = row;
    row.classList.add("hl");
  }
  function hide() {
    if (tip) tip.hidden = true;
    if (lit) lit.classList.remove("hl");
    lit = null;
  }
  document.addEventListener("mouseover", function (e) {
    const pt = e.target.closest("use[data-t]");
    if (pt) show(pt, e.pageX, e.pageY); else if (!e.target.closest("#tip")) hide();
  });
  document.addEventListener("focusin", function (e) {
    const pt = e.target.querySelector && e.target.querySelector("use[data-t]");
    if (pt) {
      const r = pt.getBoundingClientRect();
      show(pt, r.right + window.scrollX, r.bottom + window.scrollY);
    }
  });
  document.addEventListener("focusout", hide);
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") hide(); });

  // Live: the server's version every second; the main part again when it changed.
  const live = document.getElementById("live");
  let busy = false;
  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const main = document.getElementById("main");
      const v = await (await fetch("/api/version", { cache: "no-store" })).text();
      if (v.trim() !== main.dataset.version) {
        const url = new URL(location.href);
        url.searchParams.set("fragment", "1");
        const r = await fetch(url, { cache: "no-store" });
        if (r.ok) {
          main.innerHTML = await r.text();
          main.dataset.version = r.headers.get("x-orchestra-version") || v.trim();
          restore();
          live.textContent = "updated " + new Date().toLocaleTimeString();
        }
      }
      live.classList.remove("stale");
    } catch (err) {
      live.textContent = "connection lost, retrying";
      live.classList.add("stale");
    } finally {
      busy = false;
    }
  }
  setInterval(poll, 1000);
})();
