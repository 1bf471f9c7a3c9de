// engage dashboard: renders the snapshots analytics streams (server-sent events).
// Everything is built with DOM calls (never innerHTML with data), and nothing is loaded
// from anywhere but engage. The browser's EventSource reconnects by itself after a drop.
"use strict";

(function () {
  const main = document.getElementById("main");
  const K = Number(main.dataset.k);
  const SVG = "http://www.w3.org/2000/svg";
  const STATUS = {
    "under-reached": { icon: "▼", text: "Under-reached" },
    "watch": { icon: "●", text: "Watch" },
    "on-track": { icon: "✓", text: "On track" },
    "no-target": { icon: "–", text: "No target" },
  };
  // Okabe–Ito colours: told apart with most kinds of colour blindness.
  const CHANNEL_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D00"];
  let latest = null;
  let source = null;
  let lastEvent = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function count(value) {
    if (typeof value === "number") return value.toLocaleString("en-US");
    if (value === "suppressed") return "hidden";
    return value === null || value === undefined ? "–" : String(value);
  }

  function countTitle(value) {
    if (value === "suppressed") return "Hidden so that a small count elsewhere cannot be worked out";
    if (typeof value === "string") return `Fewer than ${K}: hidden to keep participants safe`;
    return null;
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${value.toFixed(1)}%`;
  }

  function clock(iso) {
    return new Date(iso).toLocaleTimeString("en-US", { hour12: false });
  }

  function ago(iso) {
    const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 45) return "just now";
    if (seconds < 90) return "1 min ago";
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return new Date(iso).toLocaleDateString("en-US", { month: "short", day: "numeric", year: "numeric" });
  }

  function setText(id, text, title) {
    const node = document.getElementById(id);
    node.textContent = text;
    if (title) node.title = title; else node.removeAttribute("title");
  }

  function badge(status) {
    const s = STATUS[status] || { icon: "?", text: status };
    return el("span", { class: `badge ${status}` }, el("span", { "aria-hidden": "true", text: s.icon }), s.text);
  }

  function needed(row) {
    if (row.needed === null || row.needed === undefined) return null;
    const people = row.needed === 1 ? "person" : "people";
    return row.needed_is_lower_bound ? `needs at least ${row.needed} more ${people}` : `needs ${row.needed} more ${people}`;
  }

  function target(t) {
    if (!t) return "–";
    if (t.share !== undefined) return `${t.share.toFixed(1)}%`;
    return `at least ${t.min_count}`;
  }

  // ---- headline tiles and freshness -------------------------------------------------
  function renderTiles(snap) {
    const t = snap.tiles;
    setText("tile-participants", count(t.participants), countTitle(t.participants));
    setText("tile-engagements", count(t.engagements), countTitle(t.engagements));
    setText("tile-lived", t.lived_experience_share === null ? "–" : percent(t.lived_experience_share),
      t.lived_experience_share === null ? "Not shown: no answers yet, or too few to show" : null);
    setText("tile-days", t.days_of_outreach === null ? "–" : String(t.days_of_outreach));
    setText("tile-days-note", t.first_day ? `${t.first_day} to ${t.last_day}` : "");
  }

  function renderFreshness(asOf) {
    const up = asOf.behind === 0;
    const when = up ? asOf.answered_at : (asOf.projected_at || asOf.answered_at);
    let lag = "up to date";
    if (!up) {
      lag = asOf.behind_seconds !== null && asOf.behind_seconds !== undefined
        ? `${Math.max(1, Math.round(asOf.behind_seconds))} s behind`
        : `${asOf.behind.toLocaleString("en-US")} events behind`;
    }
    setText("tile-fresh", `as of ${clock(when)} · ${lag}`);
    setText("tile-fresh-note", `log position ${asOf.sequence.toLocaleString("en-US")} of ${asOf.stream_sequence.toLocaleString("en-US")}`);
  }

  // ---- under-reached communities ------------------------------------------------------
  function renderUnder(snap) {
    const list = document.getElementById("under-reached");
    const items = snap.under_reached.map((row) => el("li", null,
      el("span", { class: "who", text: row.label }),
      el("span", { class: "dim", text: row.dimension_label }),
      el("span", { class: "ratio", text: row.ratio === null ? "ratio hidden (small count)" : `at ${Math.round(row.ratio * 100)}% of its target` }),
      el("span", { class: "need", text: needed(row) || "" })));
    if (!items.length) items.push(el("li", { class: "empty-item" }, el("p", { class: "empty", text: "None right now." })));
    list.replaceChildren(...items);
  }

  // ---- one table per dimension --------------------------------------------------------
  function bar(row) {
    const hidden = typeof row.count !== "number";
    const track = el("div", { class: hidden ? "bar hidden" : "bar", "aria-hidden": "true" });
    // A share target: the bar is the share. A minimum count: the bar is the way to that minimum.
    const minimum = row.target && row.target.min_count !== undefined;
    const width = minimum ? (row.ratio === null ? null : 100 * row.ratio) : row.share;
    if (!hidden && width !== null) {
      const fill = el("div", { class: `fill ${row.status}` });
      fill.style.width = `${Math.min(100, width)}%`;
      track.append(fill);
    }
    if (row.target && row.target.share !== undefined) {
      const mark = el("div", { class: "target", title: `target ${target(row.target)}` });
      mark.style.left = `${Math.min(100, row.target.share)}%`;
      track.append(mark);
    }
    return track;
  }

  function renderDimensions(snap) {
    const box = document.getElementById("dimensions");
    box.replaceChildren(...snap.dimensions.map((dim) => {
      const id = `dim-${dim.dimension}`;
      const meta = dim.derived
        ? "Worked out from roles and answers; shares are of all participants."
        : `Answered ${count(dim.answered)} · declined ${count(dim.declined)} · not answered ${count(dim.not_answered)}`
          + (dim.multi_select ? " · several answers allowed, so shares can add up past 100%" : "");
      const rows = dim.categories.map((row) => el("tr", null,
        el("th", { scope: "row", text: row.label }),
        el("td", { class: "num", title: countTitle(row.count), text: count(row.count) }),
        el("td", { class: "num", text: percent(row.share) }),
        el("td", { class: "barcell" }, bar(row)),
        el("td", { class: "num", text: target(row.target) }),
        el("td", null, badge(row.status), needed(row) ? el("span", { class: "visually-hidden", text: `, ${needed(row)}` }) : null)));
      return el("section", { class: "dimension", "aria-labelledby": id },
        el("h3", { id, text: dim.label }),
        el("p", { class: "meta", text: meta }),
        el("div", { class: "table-wrap" },
          el("table", { class: "cats" },
            el("thead", null, el("tr", null,
              el("th", { scope: "col", text: "Category" }), el("th", { scope: "col", class: "num", text: "People" }),
              el("th", { scope: "col", class: "num", text: "Share" }), el("th", { scope: "col", text: "Share and target" }),
              el("th", { scope: "col", class: "num", text: "Target" }), el("th", { scope: "col", text: "Status" }))),
            el("tbody", null, ...rows))));
    }));
  }

  // ---- participation over time ------------------------------------------------------------
  function renderChart(snap) {
    const data = snap.over_time;
    const box = document.getElementById("chart");
    document.getElementById("time-hint").textContent = snap.segment
      ? `Engagements per week by channel, for the whole process (not only ${snap.segment.label}). Hatched: counts hidden to protect small groups.`
      : "Engagements per week, by channel. Hatched: counts hidden to protect small groups.";
    const colours = Object.fromEntries(data.channels.map((c, i) => [c.channel, CHANNEL_COLOURS[i % CHANNEL_COLOURS.length]]));
    if (!data.periods.length) {
      box.replaceChildren(el("p", { class: "empty", text: "Nothing recorded yet." }));
      document.getElementById("chart-table").replaceChildren();
      return;
    }
    const W = 800, H = 230, left = 40, bottom = 26, top = 10;
    const stacks = data.periods.map((p) => {
      const shown = data.channels.map((c) => [c, p.engagements[c.channel]]).filter(([, v]) => typeof v === "number" && v > 0);
      const shownSum = shown.reduce((s, [, v]) => s + v, 0);
      const hiddenAny = data.channels.some((c) => typeof p.engagements[c.channel] === "string");
      const rest = typeof p.total === "number" ? p.total - shownSum : null;
      return { p, shown, shownSum, hiddenAny, rest };
    });
    const max = Math.max(1, ...stacks.map((s) => s.shownSum + (s.rest || 0)));
    const scale = (H - top - bottom) / max;
    const step = (W - left) / stacks.length;
    const width = Math.max(2, Math.min(40, step * 0.7));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `Engagements per week, ${stacks.length} weeks, by channel` });
    chart.append(svg("defs", null, svg("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" }, svg("rect", { width: 6, height: 6, fill: "#eceef1" }),
      svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#7a828e", "stroke-width": 3 }))));
    for (const fraction of [0, 0.5, 1]) {
      const value = Math.round(max * fraction);
      const y = H - bottom - value * scale;
      chart.append(svg("line", { class: "gridline", x1: left, x2: W, y1: y, y2: y }));
      const label = svg("text", { class: "axis", x: left - 6, y: y + 4, "text-anchor": "end" });
      label.textContent = value;
      chart.append(label);
    }
    const labelEvery = Math.ceil(stacks.length / 10);
    stacks.forEach((s, i) => {
      const x = left + i * step + (step - width) / 2;
      let y = H - bottom;
      const group = svg("g", { "data-period": s.p.period, "data-total": String(s.p.total) });
      for (const [c, v] of s.shown) {
        const h = v * scale;
        y -= h;
        const rect = svg("rect", { x, y, width, height: h, fill: colours[c.channel] });
        const title = svg("title");
        title.textContent = `Week of ${s.p.period} · ${c.label}: ${v}`;
        rect.append(title);
        group.append(rect);
      }
      if (s.hiddenAny || (typeof s.p.total !== "number" && s.p.total !== 0)) {
        const h = s.rest !== null ? s.rest * scale : 4;
        y -= h;
        const rect = svg("rect", { x, y, width, height: Math.max(h, 2), fill: "url(#hatch)" });
        const title = svg("title");
        title.textContent = `Week of ${s.p.period} · hidden to protect small groups`;
        rect.append(title);
        group.append(rect);
      }
      chart.append(group);
      if (i % labelEvery === 0) {
        const label = svg("text", { class: "axis", x: x + width / 2, y: H - 8, "text-anchor": "middle" });
        label.textContent = s.p.period.slice(5);
        chart.append(label);
      }
    });
    const legend = el("ul", { class: "legend" },
      ...data.channels.map((c) => {
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = colours[c.channel];
        return el("li", null, swatch, c.label);
      }),
      el("li", null, el("span", { class: "swatch hatched", "aria-hidden": "true" }), "Hidden (small counts)"));
    box.replaceChildren(chart, legend);

    const head = el("tr", null, el("th", { scope: "col", text: "Week of" }),
      ...data.channels.map((c) => el("th", { scope: "col", class: "num", text: c.label })),
      el("th", { scope: "col", class: "num", text: "All" }));
    const body = data.periods.map((p) => el("tr", null, el("th", { scope: "row", text: p.period }),
      ...data.channels.map((c) => el("td", { class: "num", text: count(p.engagements[c.channel] ?? 0) })),
      el("td", { class: "num", text: count(p.total) })));
    document.getElementById("chart-table").replaceChildren(
      el("table", { class: "cats" }, el("thead", null, head), el("tbody", null, ...body)));
  }

  // ---- recent activity ------------------------------------------------------------------
  function renderFeed(snap) {
    const list = document.getElementById("feed");
    const items = snap.feed.map((item) => {
      const what = [item.kind === "gathering_held" && item.channel ? `${item.channel} held` : item.label,
        item.region, item.topic].filter(Boolean).join(" · ");
      return el("li", null, el("span", { class: "what", text: what }),
        el("time", { class: "when", datetime: item.recorded_at, "data-ago": item.recorded_at,
          title: `happened ${new Date(item.occurred_at).toLocaleString("en-US")}`, text: ago(item.recorded_at) }));
    });
    if (!items.length) items.push(el("li", null, el("p", { class: "empty", text: "Nothing yet." })));
    list.replaceChildren(...items);
  }

  function render(snap) {
    latest = snap;
    main.dataset.sequence = snap.as_of.sequence;
    renderTiles(snap);
    renderFreshness(snap.as_of);
    renderUnder(snap);
    renderChart(snap);
    renderDimensions(snap);
    renderFeed(snap);
  }

  // ---- the live connection ------------------------------------------------------------------
  function connection(text, lost) {
    const line = document.getElementById("connection");
    line.textContent = text;
    line.classList.toggle("lost", Boolean(lost));
    main.dataset.connection = lost ? "lost" : "live";
  }

  function connect() {
    const params = new URLSearchParams(window.location.search);
    source = new EventSource(`/dashboard/stream?${params}`);
    source.addEventListener("snapshot", (e) => {
      lastEvent = Date.now();
      render(JSON.parse(e.data));
      connection("Live: updates as soon as they are counted.");
    });
    source.addEventListener("as_of", (e) => {
      lastEvent = Date.now();
      renderFreshness(JSON.parse(e.data));
      connection("Live: updates as soon as they are counted.");
    });
    source.addEventListener("signed-out", () => { window.location.assign("/dashboard/login"); });
    source.onerror = () => {
      connection("Connection lost: reconnecting…", true);
      if (source.readyState === EventSource.CLOSED) {
        // The server answered but not with a stream: signed out, or something to wait out.
        fetch(`/dashboard/snapshot?${params}`, { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) window.location.assign(`/dashboard/login?next=${encodeURIComponent(location.pathname + location.search)}`);
          else setTimeout(connect, 2000);
        }).catch(() => setTimeout(connect, 2000));
      }
    };
  }

  setInterval(() => {
    for (const node of document.querySelectorAll("[data-ago]")) node.textContent = ago(node.dataset.ago);
    if (lastEvent && Date.now() - lastEvent > 15000 && source && source.readyState !== EventSource.OPEN) {
      connection("Connection lost: reconnecting…", true);
    }
  }, 5000);

  connect();
})();
