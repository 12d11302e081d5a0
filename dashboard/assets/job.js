// One job's page: its stage graph drawn as a DAG (each stage filled as its tasks
// finish), and every stage's physical plan with each operator's metrics summed over all
// of the stage's tasks.
"use strict";

(() => {
  const { el, svg, bytes, count, seconds } = Shoal;
  const id = Number(Shoal.pageId());
  Shoal.replace("page",
    el("h2", {}, `Job ${id}`), el("div", { id: "job-summary", class: "cards" }),
    el("div", { id: "job-label", class: "label" }), el("div", { id: "job-actions" }),
    el("h2", {}, "Stages"), el("div", { id: "job-dag" }),
    el("h2", {}, "Plan, with operator metrics summed over every task"), el("div", { id: "job-plan" }));

  let drawnFor = null;

  function metricText(m) {
    if (m.unit === "nanoseconds") return `${m.name}=${seconds(m.value / 1e9)}`;
    if (m.unit === "bytes") return `${m.name}=${bytes(m.value)}`;
    return `${m.name}=${count(m.value)}`;
  }

  // Columns by depth (a stage one column right of its deepest input), edges as curves.
  function drawDag(job) {
    const graph = job.graph || [];
    const depth = [];
    // Stages come after their inputs; an input that does not is drawn as a source.
    const known = (s, i) => s.inputs.filter((j) => j < i);
    graph.forEach((s, i) => { depth[i] = known(s, i).length ? 1 + Math.max(...known(s, i).map((j) => depth[j])) : 0; });
    const columns = [];
    graph.forEach((_, i) => (columns[depth[i]] = columns[depth[i]] || []).push(i));
    const W = 170, H = 54, GX = 60, GY = 18;
    const at = [];
    columns.forEach((col, c) => col.forEach((s, r) => { at[s] = { x: 10 + c * (W + GX), y: 10 + r * (H + GY) }; }));
    const tallest = Math.max(1, ...columns.map((c) => c.length));
    const chart = svg("svg", { id: "dag", width: 20 + columns.length * (W + GX), height: 20 + tallest * (H + GY) });
    const finished = new Map((job.stage_totals || []).map((s) => [s.stage, s]));
    graph.forEach((s, i) => known(s, i).forEach((j) => {
      const a = at[j], b = at[i];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      chart.append(svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}` }));
    }));
    graph.forEach((s, i) => {
      const done = finished.get(i);
      const fraction = done ? done.tasks_finished / (s.tasks || 1) : 0;
      // The stage's main operator: the first under its writer that is not a wrapper.
      const wrappers = /^(ShuffleWriteExec|CooperativeExec|CoalesceBatchesExec|ProjectionExec)/;
      const main = s.operators.find(([, text]) => !wrappers.test(text)) || s.operators[0] || [0, ""];
      const top = main[1].split(/[:,( ]/)[0];
      const g = svg("g", { class: "stage", "data-stage": i });
      g.append(svg("rect", { class: "stage-box", x: at[i].x, y: at[i].y, width: W, height: H, rx: 4 },
        `stage ${i}: ${s.tasks} tasks, reads ${s.inputs.length ? "stages " + s.inputs.join(", ") : "sources"}`));
      g.append(svg("rect", { x: at[i].x, y: at[i].y + H - 6, width: W * Math.min(1, fraction), height: 6,
        fill: Shoal.stageColor(id, i) }));
      g.append(svg("text", { x: at[i].x + 6, y: at[i].y + 16 }, `stage ${i} · ${count(s.tasks)} task${s.tasks === 1 ? "" : "s"}`));
      g.append(svg("text", { x: at[i].x + 6, y: at[i].y + 32 }, top.slice(0, 26)));
      g.append(svg("text", { x: at[i].x + 6, y: at[i].y + 45 },
        done ? `${count(done.tasks_finished)} done · ${seconds(done.compute_seconds)}` : "waiting"));
      g.addEventListener("click", () => document.getElementById(`stage-${i}`).scrollIntoView());
      chart.append(g);
    });
    Shoal.replace("job-dag", graph.length ? chart : el("div", { class: "muted" }, "The dashboard joined after this job started: no stage graph."));
  }

  function drawPlan(job) {
    const metrics = new Map();
    for (const m of job.operator_metrics || []) {
      const key = `${m.stage}:${m.operator}`;
      (metrics.get(key) || metrics.set(key, []).get(key)).push(m);
    }
    const totals = new Map((job.stage_totals || []).map((s) => [s.stage, s]));
    const blocks = (job.graph || []).map((s, i) => {
      const t = totals.get(i);
      const lines = s.operators.map(([depth, text], node) => {
        const shown = (metrics.get(`${i}:${node}`) || []).map(metricText).join(", ");
        return el("div", { class: "operator" }, "  ".repeat(Math.min(depth, 200)) + text,
          el("span", { class: "metrics" }, shown ? `  [${shown}]` : ""));
      });
      return el("div", { id: `stage-${i}` },
        el("h3", {}, `Stage ${i}`, el("span", { class: "muted" },
          ` — ${count(s.tasks)} task${s.tasks === 1 ? "" : "s"}` + (s.inputs.length ? `, reads stages ${s.inputs.join(", ")}` : "") +
          (t ? `, ${seconds(t.compute_seconds)} of compute, ${bytes(t.output_bytes)} out` : ""))),
        el("pre", { class: "plan" }, ...lines));
    });
    Shoal.replace("job-plan", ...blocks);
  }

  let timer = null;

  async function refresh() {
    const job = await Shoal.get(`api/v1/jobs/${id}`);
    // A job that ended does not change any more.
    if (job.state !== "running" && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
    Shoal.replace("job-summary",
      el("div", { class: "card" }, el("b", { class: `state-${job.state}`, id: "job-state" }, job.state), "state"),
      el("div", { class: "card" }, el("b", {}, seconds(job.duration_seconds)), "duration"),
      el("div", { class: "card" }, el("b", {}, `${count(job.tasks_done)} / ${count(job.tasks_total)}`), "tasks"),
      el("div", { class: "card" }, el("b", {}, count(job.rows)), "rows"),
      el("div", { class: "card" }, el("b", {}, bytes(job.output_bytes)), "output"),
      el("div", { class: "card" }, el("b", {}, bytes(job.transferred_bytes)), "transferred"),
      el("div", { class: "card" }, el("b", {}, seconds(job.compute_seconds)), "compute"));
    Shoal.replace("job-label", job.label || "", job.error ? el("div", { class: "problem" }, job.error) : "");
    if (job.state === "running") {
      const cancel = el("button", { id: "cancel" }, "Cancel this job");
      cancel.addEventListener("click", async () => {
        try { await Shoal.post(`api/v1/jobs/${id}/cancel`); } catch (e) { Shoal.problem(e.message); }
      });
      Shoal.replace("job-actions", cancel);
    } else {
      Shoal.replace("job-actions");
    }
    const key = `${job.state}:${job.tasks_done}`;
    if (key !== drawnFor) {
      drawnFor = key;
      drawDag(job);
      drawPlan(job);
    }
  }

  timer = Shoal.every(1000, refresh);
})();
