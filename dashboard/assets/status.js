// The status page: cluster and per-worker memory, the task stream (one row per worker
// slot) and per-job, per-stage progress. Polls the API (the task stream by cursor) and
// refreshes progress when the event stream says something happened.
"use strict";

(() => {
  const { el, svg, bar, bytes, count, seconds } = Shoal;
  // The stream shows the last minute of activity at most, a quarter second at least.
  const LONGEST = 60, SHORTEST = 0.25;
  // Entries kept and drawn: the newest, fetched at most this many at a time.
  const KEPT = 2000;
  const HISTOGRAM_PAST = 100;

  Shoal.replace("page",
    el("h2", {}, "Cluster memory"), el("div", { id: "cluster-memory" }),
    el("h2", {}, "Workers"), el("div", { id: "worker-memory" }),
    el("h2", {}, "Task stream"),
    el("div", { class: "muted" }, "Each row is a worker slot; tasks are coloured by job and stage, ",
       "transfers (purple) and spills (orange) are marked, failures drawn in red."),
    el("div", { id: "task-stream" }),
    el("h2", {}, "Progress"), el("div", { id: "progress" }));

  let workers = [];
  let cursor = 0;
  let entries = [];

  function drawMemory() {
    const used = workers.reduce((s, w) => s + w.memory_used, 0);
    const spilled = workers.reduce((s, w) => s + w.spilled_bytes, 0);
    const limit = workers.reduce((s, w) => s + w.memory_limit, 0) || 1;
    const alive = workers.filter((w) => w.alive).length;
    Shoal.replace("cluster-memory",
      el("div", { class: "cards" },
        el("div", { class: "card", id: "worker-count" }, el("b", {}, String(alive)), "workers"),
        el("div", { class: "card" }, el("b", {}, bytes(used)), "in use of " + bytes(limit)),
        el("div", { class: "card" }, el("b", {}, bytes(spilled)), "spilled so far"),
        el("div", { class: "card" },
          el("b", {}, String(workers.reduce((s, w) => s + w.tasks_running, 0))), "tasks running")),
      bar([[used / limit, "used"]]));
    if (workers.length > HISTOGRAM_PAST) {
      drawHistogram();
      return;
    }
    const rows = workers.map((w) => el("div", { class: "row worker" },
      el("span", {}, `worker ${w.id}${w.alive ? "" : " (lost)"}${w.retiring ? " (retiring)" : ""}`),
      bar([[w.memory_used / (w.memory_limit || 1), "used"], [w.disk_bytes / (w.memory_limit || 1), "spilled"]]),
      el("span", { class: "muted" },
        `${bytes(w.memory_used)} / ${bytes(w.memory_limit)}` +
        (w.disk_bytes ? `, ${bytes(w.disk_bytes)} on disk` : "") + `, ${w.tasks_running} running`)));
    Shoal.replace("worker-memory", ...rows);
  }

  // Past 100 workers: how many workers use each tenth of their memory.
  function drawHistogram() {
    const buckets = new Array(10).fill(0);
    for (const w of workers) {
      const f = w.memory_used / (w.memory_limit || 1);
      buckets[Math.min(9, Math.floor(f * 10))]++;
    }
    const most = Math.max(...buckets, 1);
    const chart = svg("svg", { width: 420, height: 150, class: "histogram" });
    buckets.forEach((n, i) => {
      const h = (n / most) * 110;
      chart.append(svg("rect", { x: 10 + i * 40, y: 120 - h, width: 34, height: h, fill: "#1f6feb" },
        `${n} workers at ${i * 10}–${i * 10 + 10}% of their memory`));
      chart.append(svg("text", { x: 12 + i * 40, y: 138 }, `${i * 10}%`));
    });
    Shoal.replace("worker-memory", chart);
  }

  function drawStream() {
    // Every slot of the workers now, and any other a kept task ran in (a worker that
    // left, or every slot of a replayed event log).
    const pairs = new Map();
    for (const w of workers) for (let s = 0; s < w.slots; s++) pairs.set(`${w.id}:${s}`, [w.id, s]);
    for (const e of entries) if (e.kind === "task") pairs.set(`${e.worker}:${e.slot}`, [e.worker, e.slot]);
    const slots = [...pairs.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const rowOf = new Map(slots.map(([w, s], i) => [`${w}:${s}`, i]));
    const firstRow = new Map();
    slots.forEach(([w], i) => { if (!firstRow.has(w)) firstRow.set(w, i); });
    const ends = entries.map((e) => e.end || e.at);
    const right = ends.length ? ends.reduce((a, b) => Math.max(a, b)) : Date.now() / 1000;
    const starts = entries.map((e) => e.start || e.at).filter((t) => t > right - LONGEST);
    const earliest = starts.length ? starts.reduce((a, b) => Math.min(a, b)) : right;
    const span = Math.min(LONGEST, Math.max(SHORTEST, (right - earliest) * 1.05));
    const left = right - span;
    const width = 900, label = 90, rowHeight = 16;
    const x = (t) => label + ((t - left) / span) * (width - label);
    const height = Math.max(1, slots.length) * rowHeight + 20;
    const chart = svg("svg", { width, height, id: "task-stream-chart" });
    slots.forEach(([w, s], i) => chart.append(svg("text", { x: 2, y: i * rowHeight + 12 }, `worker ${w} · ${s}`)));
    for (const e of entries) {
      if ((e.end || e.at) < left) continue;
      if (e.kind === "task") {
        const row = rowOf.get(`${e.worker}:${e.slot}`);
        if (row === undefined) continue;
        const start = Math.max(e.start, left);
        chart.append(svg("rect", {
          class: "task", x: x(start), y: row * rowHeight + 2, height: rowHeight - 4,
          width: Math.max(1.5, x(e.end) - x(start)), fill: Shoal.stageColor(e.job, e.stage),
        }, `job ${e.job} stage ${e.stage} task ${e.partition} (attempt ${e.attempt}): ` +
           `${seconds(e.end - e.start)}, ${bytes(e.output_bytes)} out`));
      } else if (e.kind === "transfer" || e.kind === "spill") {
        const row = firstRow.get(e.kind === "transfer" ? e.to : e.worker);
        if (row === undefined) continue;
        const cx = x(e.at), top = row * rowHeight;
        const what = e.kind === "transfer"
          ? `worker ${e.to} fetched ${bytes(e.bytes)} from worker ${e.from}`
          : `worker ${e.worker} spilled ${bytes(e.bytes)}`;
        chart.append(svg("path", {
          class: e.kind, d: `M${cx - 4},${top} L${cx + 4},${top} L${cx},${top + 6} Z`,
        }, what));
      } else if (e.kind === "failure") {
        chart.append(svg("line", { class: "failure", x1: x(e.at), x2: x(e.at), y1: 0, y2: height - 20 },
          `job ${e.job} failed: ${e.message}`));
      }
    }
    chart.append(svg("text", { x: label, y: height - 4 }, `the last ${seconds(span)} of activity`));
    Shoal.replace("task-stream", chart);
  }

  async function refreshWorkers() {
    workers = await Shoal.get("api/v1/workers");
    drawMemory();
    drawStream();
  }

  async function refreshStream() {
    const page = await Shoal.get(`api/v1/tasks?since=${cursor}&limit=${KEPT}&newest=true`);
    cursor = page.next;
    if (!page.entries.length) return;
    entries.push(...page.entries);
    if (entries.length > KEPT) entries = entries.slice(entries.length - KEPT);
    drawStream();
  }

  async function refreshProgress() {
    const jobs = await Shoal.get("api/v1/progress");
    if (!jobs.length) {
      Shoal.replace("progress", el("div", { class: "muted" }, "No jobs yet."));
      return;
    }
    const blocks = jobs.map((job) => {
      const percent = job.tasks_total ? Math.floor((100 * job.tasks_done) / job.tasks_total) : 0;
      const head = el("div", { class: "row job-progress", "data-job": job.job },
        el("a", { href: `jobs/${job.job}` }, `job ${job.job}`),
        bar([[job.tasks_done / (job.tasks_total || 1), "done"]]),
        el("span", { class: `state-${job.state}` }, `${percent}% · ${job.state}`));
      const stages = job.stages.map((s) => el("div", { class: "row" },
        el("span", { class: "muted" }, `  stage ${s.stage}`),
        bar([[s.tasks_finished / (s.tasks || 1), "done"]]),
        el("span", { class: "muted" }, `${count(s.tasks_finished)} / ${count(s.tasks)} tasks`)));
      return el("div", {}, head, el("div", { class: "muted label" }, job.label || ""), ...stages);
    });
    Shoal.replace("progress", ...blocks);
  }

  Shoal.whenLive("worker-memory", () => Shoal.every(1000, refreshWorkers));
  Shoal.every(1000, refreshStream);
  Shoal.every(2000, refreshProgress);
  Shoal.events(Shoal.throttled(250, refreshProgress));
})();
