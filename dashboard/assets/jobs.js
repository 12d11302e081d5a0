// The jobs page: running and finished jobs, newest first.
"use strict";

(() => {
  const { el, bytes, count, seconds } = Shoal;
  Shoal.replace("page", el("h2", {}, "Jobs"), el("table", { id: "jobs" }));
  const SHOWN = 200;
  const head = ["job", "SQL or operation", "state", "duration", "rows", "tasks", "output", "transferred", "spilled"];

  async function refresh() {
    const jobs = await Shoal.get(`api/v1/jobs?limit=${SHOWN}`);
    const header = el("tr", {}, ...head.map((h, i) => el("th", i > 2 ? { class: "num" } : {}, h)));
    const rows = jobs.map((j) => el("tr", { class: "job", "data-job": j.id },
      el("td", {}, el("a", { href: `jobs/${j.id}` }, `job ${j.id}`)),
      el("td", { class: "label" }, j.label || "—"),
      el("td", { class: `state-${j.state}` }, j.state),
      el("td", { class: "num" }, seconds(j.duration_seconds)),
      el("td", { class: "num" }, count(j.rows)),
      el("td", { class: "num" }, `${count(j.tasks_done)} / ${count(j.tasks_total)}`),
      el("td", { class: "num" }, bytes(j.output_bytes)),
      el("td", { class: "num" }, bytes(j.transferred_bytes)),
      el("td", { class: "num" }, bytes(j.spilled_bytes))));
    Shoal.replace("jobs", header, ...(rows.length ? rows : [el("tr", {}, el("td", { class: "muted" }, "No jobs yet."))]));
  }

  Shoal.every(2000, refresh);
  Shoal.events(Shoal.throttled(1000, refresh));
})();
