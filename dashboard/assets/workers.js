// The workers page: one row per worker, refreshed every second.
"use strict";

(() => {
  const { el, bytes, count } = Shoal;
  Shoal.replace("page", el("h2", {}, "Workers"), el("table", { id: "workers" }));

  const head = ["worker", "address", "state", "slots", "resources in use / offered", "memory used",
    "memory limit", "spilled", "running", "done", "sent", "received"];
  const numeric = new Set([3, 5, 6, 7, 8, 9, 10, 11]);

  async function refresh() {
    const workers = await Shoal.get("api/v1/workers");
    const header = el("tr", {}, ...head.map((h, i) => el("th", numeric.has(i) ? { class: "num" } : {}, h)));
    const rows = workers.map((w) => {
      const state = !w.alive ? "lost" : w.retiring ? "retiring" : "alive";
      const resources = Object.entries(w.resources)
        .map(([k, v]) => `${k} ${w.resources_in_use[k] || 0} / ${v}`).join(", ");
      const cells = [
        el("a", { href: `workers/${w.id}` }, `worker ${w.id}`), w.address, state, String(w.slots),
        resources || "—", bytes(w.memory_used), bytes(w.memory_limit), bytes(w.spilled_bytes),
        count(w.tasks_running), count(w.tasks_completed), bytes(w.sent_bytes), bytes(w.received_bytes),
      ];
      return el("tr", { class: "worker", "data-worker": w.id },
        ...cells.map((c, i) => el("td", numeric.has(i) ? { class: "num" } : {}, c)));
    });
    Shoal.replace("workers", header, ...rows);
  }

  Shoal.whenLive("workers", () => Shoal.every(1000, refresh));
})();
