// One worker's page: its numbers now, its memory and running tasks over the time the
// page has been open, and the last tasks it ran (from the task stream).
"use strict";

(() => {
  const { el, svg, bytes, count, seconds } = Shoal;
  const id = Number(Shoal.pageId());
  const HISTORY = 300;
  const TASKS_SHOWN = 50;
  Shoal.replace("page",
    el("h2", {}, `Worker ${id}`), el("div", { id: "worker-now", class: "cards" }),
    el("h2", {}, "Memory and running tasks"), el("div", { id: "worker-history" }),
    el("h2", {}, "Recent tasks"), el("table", { id: "worker-tasks" }));

  const history = [];
  let cursor = 0;
  let tasks = [];

  function line(points, key, most, color) {
    const step = 580 / Math.max(1, points.length - 1);
    const d = points.map((p, i) => `${i ? "L" : "M"}${10 + i * step},${110 - Math.min(1, p[key] / most) * 100}`).join(" ");
    return svg("path", { d, fill: "none", stroke: color, "stroke-width": 2 });
  }

  async function refresh() {
    const w = await Shoal.get(`api/v1/workers/${id}`);
    history.push({ memory: w.memory_used, running: w.tasks_running });
    if (history.length > HISTORY) history.shift();
    Shoal.replace("worker-now",
      el("div", { class: "card" }, el("b", {}, w.alive ? (w.retiring ? "retiring" : "alive") : "lost"), w.address),
      el("div", { class: "card" }, el("b", {}, bytes(w.memory_used)), `of ${bytes(w.memory_limit)}`),
      el("div", { class: "card" }, el("b", {}, bytes(w.spilled_bytes)), "spilled"),
      el("div", { class: "card" }, el("b", {}, `${w.tasks_running} / ${w.slots}`), "slots busy"),
      el("div", { class: "card" }, el("b", {}, count(w.tasks_completed)), "tasks done"),
      el("div", { class: "card" }, el("b", {}, `${bytes(w.sent_bytes)} / ${bytes(w.received_bytes)}`), "sent / received"));
    const chart = svg("svg", { width: 600, height: 130 });
    chart.append(svg("rect", { x: 10, y: 10, width: 580, height: 100, fill: "none", stroke: "#d9dee4" }));
    chart.append(line(history, "memory", w.memory_limit || 1, "#1f6feb"));
    chart.append(line(history, "running", Math.max(1, w.slots), "#1a7f37"));
    chart.append(svg("text", { x: 10, y: 126 }, "memory (blue, of the limit) and running tasks (green, of the slots), once a second"));
    Shoal.replace("worker-history", chart);
  }

  async function refreshTasks() {
    const page = await Shoal.get(`api/v1/tasks?since=${cursor}`);
    cursor = page.next;
    tasks.push(...page.entries.filter((e) => e.kind === "task" && e.worker === id));
    tasks = tasks.slice(-TASKS_SHOWN);
    const header = el("tr", {}, ...["job", "stage", "task", "attempt", "slot", "took", "output"].map((h) => el("th", {}, h)));
    const rows = tasks.slice().reverse().map((t) => el("tr", {},
      el("td", {}, el("a", { href: `${Shoal.root}jobs/${t.job}` }, String(t.job))), el("td", {}, String(t.stage)),
      el("td", {}, String(t.partition)), el("td", {}, String(t.attempt)), el("td", {}, String(t.slot)),
      el("td", {}, seconds(t.end - t.start)), el("td", {}, bytes(t.output_bytes))));
    Shoal.replace("worker-tasks", header, ...rows);
  }

  Shoal.whenLive("worker-now", () => Shoal.every(1000, refresh));
  Shoal.every(1000, refreshTasks);
})();
