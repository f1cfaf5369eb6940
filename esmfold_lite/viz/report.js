// esmfold-lite report: sortable, filterable table; 3D views made while their protein is on screen.
"use strict";
(function () {
  const table = document.getElementById("summary");
  const body = table.tBodies[0];

  // --- table: click a header to sort (again to reverse); empty cells last -------------------------------------
  Array.from(table.tHead.rows[0].cells).forEach(function (th, column) {
    th.addEventListener("click", function () {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      Array.from(table.tHead.rows[0].cells).forEach((cell) => cell.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = th.dataset.type === "number";
      const key = function (row) {
        const cell = row.cells[column];
        return numeric ? cell.dataset.value : cell.textContent.toLowerCase();
      };
      const rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        const x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });

  // --- table: filter by id, or show failed proteins only ------------------------------------------------------
  const filter = document.getElementById("filter");
  const failedOnly = document.getElementById("failed-only");
  function applyFilter() {
    const text = filter.value.trim().toLowerCase();
    Array.from(body.rows).forEach(function (row) {
      const failed = !row.classList.contains("status-ok");
      const match = row.cells[1].textContent.toLowerCase().includes(text);
      row.hidden = !match || (failedOnly.checked && !failed);
    });
  }
  filter.addEventListener("input", applyFilter);
  failedOnly.addEventListener("change", applyFilter);

  // --- 3D views ------------------------------------------------------------------------------------------------
  function message(element, text) {
    const span = document.createElement("span");
    span.className = "placeholder";
    span.textContent = text;
    element.replaceChildren(span);
  }

  async function structureText(payload) {
    const bytes = Uint8Array.from(atob(payload.data), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return await new Response(stream).text();
  }

  const views = new Map(); // element -> {viewer} while on screen; a missing entry means none

  async function open(element) {
    if (views.has(element)) return;
    const state = {viewer: null};
    views.set(element, state);
    if (typeof $3Dmol === "undefined") {
      message(element, "3Dmol.js did not load (offline?): make the report with --3dmol-js PATH to embed it");
      return;
    }
    try {
      const payload = JSON.parse(document.getElementById(element.dataset.structure).textContent);
      const text = await structureText(payload);
      if (views.get(element) !== state) return; // scrolled away meanwhile
      element.replaceChildren();
      const viewer = $3Dmol.createViewer(element, {backgroundColor: "white"});
      state.viewer = viewer;
      viewer.addModel(text, payload.format);
      payload.commands.forEach(([method, args]) => viewer[method](...args));
      viewer.zoomTo();
      viewer.render();
      element.dataset.rendered = "true";
    } catch (error) {
      message(element, "3D view failed: " + error);
    }
  }

  function close(element) {
    const state = views.get(element);
    views.delete(element);
    if (!state || !state.viewer) return;
    const canvas = element.querySelector("canvas");
    state.viewer.clear();
    const gl = canvas && (canvas.getContext("webgl2") || canvas.getContext("webgl"));
    const lose = gl && gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext(); // free the WebGL context now, not at garbage collection
    delete element.dataset.rendered;
    message(element, "3D view");
  }

  const margin = 200; // px beyond the window where views are already made
  const observer = new IntersectionObserver(function (entries) {
    entries.forEach((entry) => (entry.isIntersecting ? open(entry.target) : close(entry.target)));
  }, {rootMargin: margin + "px"});
  document.querySelectorAll(".viewer").forEach(function (element) {
    observer.observe(element);
    // views on screen at load are made now, not at the observer's first callback (which waits for a frame)
    const box = element.getBoundingClientRect();
    if (box.bottom >= -margin && box.top <= window.innerHeight + margin) open(element);
  });
})();
