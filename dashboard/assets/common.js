// What every dashboard page shares: API calls relative to the page (so the dashboard
// works under any path prefix), formatting, element builders and the event stream.
"use strict";

const Shoal = (() => {
  const root = document.body.dataset.root;
  const SVG = "http://www.w3.org/2000/svg";

  function problem(text) {
    const line = document.getElementById("problem");
    if (line) line.textContent = text || "";
  }

  async function get(path) {
    const response = await fetch(root + path, { credentials: "same-origin" });
    if (!response.ok) {
      let why = response.statusText;
      try { why = (await response.json()).error || why; } catch (_) { /* not JSON */ }
      const error = new Error(why);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  // A call that changes something; asks for the cluster token when one is needed.
  async function post(path) {
    let headers = {};
    for (let round = 0; round < 2; round++) {
      const response = await fetch(root + path, { method: "POST", headers, credentials: "same-origin" });
      if (response.status === 401 && round === 0) {
        const token = window.prompt("This needs the cluster token:");
        if (!token) throw new Error("no token given");
        headers = { Authorization: "Bearer " + token };
        continue;
      }
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      return body;
    }
    throw new Error("the token was refused");
  }

  function bytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }

  function seconds(s) {
    if (s === null || s === undefined) return "";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(2) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function count(n) {
    return n === null || n === undefined ? "" : Number(n).toLocaleString("en");
  }

  // An element: `el("td", {class: "num"}, "12")`; children may be nodes or text.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) {
      if (tag === "text" || tag === "title") node.textContent = text;
      else node.append(svg("title", {}, text));
    }
    return node;
  }

  // A bar of `parts` ([fraction, class]) stacked from the left.
  function bar(parts) {
    const outer = el("div", { class: "bar" });
    let left = 0;
    for (const [fraction, cls] of parts) {
      const width = Math.max(0, Math.min(1, fraction)) * 100;
      outer.append(el("span", { class: cls, style: `left:${left}%;width:${width}%` }));
      left += width;
    }
    return outer;
  }

  // A stable colour per (job, stage).
  function stageColor(job, stage) {
    const hue = (job * 137 + stage * 59) % 360;
    return `hsl(${hue}, 62%, 52%)`;
  }

  // Calls `fn` now and every `ms`, never two at once; a failure shows on the page, and a
  // 404 (the job or worker is no longer kept) stops the calls.
  function every(ms, fn) {
    let busy = false;
    let timer = null;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try {
        await fn();
        problem("");
      } catch (e) {
        problem(e.message);
        if (e.status === 404) clearInterval(timer);
      } finally {
        busy = false;
      }
    };
    timer = setInterval(tick, ms);
    tick();
    return timer;
  }

  // Whether a live cluster is behind the dashboard (not a replayed event log).
  let liveness = null;
  function live() {
    liveness = liveness || get("api/v1/info").then((info) => info.placement !== null);
    return liveness;
  }

  // Runs `start` when the cluster is live; otherwise says why the part is empty.
  async function whenLive(where, start) {
    if (await live()) {
      start();
    } else {
      replace(where, el("div", { class: "muted" },
        "A replayed event log: there are no live workers to show."));
    }
  }

  // Runs `fn` at most once per `ms` however often it is asked to.
  function throttled(ms, fn) {
    let waiting = false;
    return () => {
      if (waiting) return;
      waiting = true;
      setTimeout(async () => {
        waiting = false;
        try { await fn(); } catch (e) { problem(e.message); }
      }, ms);
    };
  }

  // The job-event stream: `handler` gets each event as an object, `skipped` the number
  // of task-level events each message left out (the server sends at most 500
  // events every quarter second).
  function events(handler, skipped) {
    const source = new EventSource(root + "api/v1/events");
    source.onmessage = (e) => {
      const message = JSON.parse(e.data);
      for (const event of message.events) handler(event);
      if (skipped && message.skipped) skipped(message.skipped);
    };
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  // The last segment of the page's path (the id on a job's or worker's page).
  function pageId() {
    const parts = window.location.pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1]);
  }

  function replace(id, ...children) {
    const node = document.getElementById(id);
    node.replaceChildren(...children);
    return node;
  }

  return { root, get, post, bytes, seconds, count, el, svg, bar, stageColor, every, throttled,
           events, pageId, replace, problem, whenLive };
})();
