// The info page: version, uptime, where the workers run, and every setting in effect.
"use strict";

(() => {
  const { el, seconds } = Shoal;
  Shoal.replace("page", el("h2", {}, "Shoal"), el("div", { id: "info", class: "cards" }),
    el("h2", {}, "Settings"), el("table", { id: "settings" }));

  async function refresh() {
    const info = await Shoal.get("api/v1/info");
    Shoal.replace("info",
      el("div", { class: "card" }, el("b", { id: "version" }, info.version), "version"),
      el("div", { class: "card" }, el("b", {}, seconds(info.uptime_seconds)), "up"),
      el("div", { class: "card" }, el("b", {}, info.placement || "replay"), "workers"));
    const rows = Object.entries(info.settings).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "label" }, v)));
    Shoal.replace("settings", el("tr", {}, el("th", {}, "setting"), el("th", {}, "value")), ...rows);
  }

  Shoal.every(5000, refresh);
})();
