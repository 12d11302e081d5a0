// The cluster map: the scheduler in the middle, workers around it. Task launches pulse
// from the scheduler to their worker; shuffle fetches fly from the worker that served
// them to the one that fetched them. Events are batched: at most a few dozen new
// animations start per frame, the rest are counted and dropped.
"use strict";

(() => {
  const { el, svg, bytes } = Shoal;
  const SIZE = 560, CENTER = SIZE / 2, RADIUS = 210, FLIGHT_MS = 700, PER_FRAME = 40;
  Shoal.replace("page",
    el("h2", {}, "Cluster map"),
    el("div", { class: "muted" }, "Task launches pulse from the scheduler; shuffle fetches fly between workers."),
    el("div", { id: "map-counts", class: "cards" }),
    el("div", { id: "map" }));

  const chart = svg("svg", { id: "cluster-map", width: SIZE, height: SIZE, "data-transfers": 0, "data-launches": 0 });
  const links = svg("g"), nodes = svg("g"), flights = svg("g");
  chart.append(links, nodes, flights);
  Shoal.replace("map", chart);
  const where = new Map();
  const queue = [];
  const moving = [];
  let transfers = 0, launches = 0, dropped = 0, movedBytes = 0;

  function drawNodes(workers) {
    where.clear();
    links.replaceChildren();
    nodes.replaceChildren();
    nodes.append(svg("circle", { cx: CENTER, cy: CENTER, r: 26, fill: "#0d1b2a" }, "scheduler"));
    nodes.append(svg("text", { x: CENTER - 28, y: CENTER + 42 }, "scheduler"));
    workers.forEach((w, i) => {
      const angle = (2 * Math.PI * i) / Math.max(1, workers.length) - Math.PI / 2;
      const p = { x: CENTER + RADIUS * Math.cos(angle), y: CENTER + RADIUS * Math.sin(angle) };
      where.set(w.id, p);
      links.append(svg("line", { x1: CENTER, y1: CENTER, x2: p.x, y2: p.y, stroke: "#d9dee4" }));
      const busy = w.tasks_running / Math.max(1, w.slots);
      nodes.append(svg("circle", { class: "worker-node", "data-worker": w.id, cx: p.x, cy: p.y, r: 18,
        fill: w.alive ? `hsl(210, 70%, ${75 - busy * 35}%)` : "#d1242f" },
        `worker ${w.id} (${w.address}): ${w.tasks_running} of ${w.slots} slots busy, ${bytes(w.memory_used)} in use`));
      nodes.append(svg("text", { x: p.x - 22, y: p.y + 32 }, `worker ${w.id}`));
    });
  }

  function launch(from, to, kind) {
    const dot = svg("circle", { r: kind === "transfer" ? 4 : 3, cx: from.x, cy: from.y,
      fill: kind === "transfer" ? "#6e40c9" : "#1a7f37", class: `flight ${kind}` });
    flights.append(dot);
    // Transfers bow to one side, so flights between two workers miss the scheduler.
    const bend = kind === "transfer" ? 0.35 : 0;
    const via = { x: (from.x + to.x) / 2 - (to.y - from.y) * bend, y: (from.y + to.y) / 2 + (to.x - from.x) * bend };
    moving.push({ dot, from, via, to, started: performance.now() });
  }

  function frame(now) {
    let started = 0;
    while (queue.length && started < PER_FRAME) {
      const e = queue.shift();
      if (e.kind === "fetch") {
        const from = where.get(e.from), to = where.get(e.to);
        if (from && to) { launch(from, to, "transfer"); transfers++; movedBytes += e.bytes; started++; }
      } else {
        const to = where.get(e.worker);
        if (to) { launch({ x: CENTER, y: CENTER }, to, "launch"); launches++; started++; }
      }
    }
    for (let i = moving.length - 1; i >= 0; i--) {
      const m = moving[i];
      const t = Math.min(1, (now - m.started) / FLIGHT_MS);
      const along = (a, b, c) => (1 - t) * (1 - t) * a + 2 * (1 - t) * t * b + t * t * c;
      m.dot.setAttribute("cx", along(m.from.x, m.via.x, m.to.x));
      m.dot.setAttribute("cy", along(m.from.y, m.via.y, m.to.y));
      if (t >= 1) { m.dot.remove(); moving.splice(i, 1); }
    }
    chart.setAttribute("data-transfers", transfers);
    chart.setAttribute("data-launches", launches);
    window.requestAnimationFrame(frame);
  }

  function drawCounts() {
    Shoal.replace("map-counts",
      el("div", { class: "card" }, el("b", { id: "transfer-count" }, String(transfers)), `transfers drawn (${bytes(movedBytes)})`),
      el("div", { class: "card" }, el("b", {}, String(launches)), "task launches drawn"),
      el("div", { class: "card" }, el("b", {}, String(dropped)), "events skipped (too many at once)"));
  }

  Shoal.events((e) => {
    if (e.kind !== "fetch" && e.kind !== "task_started") return;
    if (queue.length > 2000) { dropped++; return; }
    queue.push(e);
  }, (n) => { dropped += n; });
  Shoal.whenLive("map-counts", () => Shoal.every(2000, async () => drawNodes(await Shoal.get("api/v1/workers"))));
  setInterval(drawCounts, 500);
  window.requestAnimationFrame(frame);
})();
