// engage dashboard: renders the snapshots analytics streams (server-sent events). Every count
// in them is rounded to a multiple of K, and a count rounded to 0 reads "<K": they are shown as they are.
// Everything is built with DOM calls (never innerHTML with data), and nothing is loaded
// from anywhere but engage. The browser's EventSource reconnects by itself after a drop.
"use strict";

(function () {
  const main = document.getElementById("main");
  const K = Number(main.dataset.k);
  const SVG = "http://www.w3.org/2000/svg";
  const STATUS = {
    "under-reached": { icon: "▼", text: "Under-reached" },
    "attention": { icon: "!", text: "May be below target" },
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

  // Counts come rounded to a multiple of K; a count rounded to 0 comes as "<K" and is shown as it is.
  function count(value) {
    if (typeof value === "number") return value.toLocaleString("en-US");
    return value === null || value === undefined ? "–" : String(value);
  }

  function countTitle(value) {
    if (typeof value === "string") return `Fewer than ${K}: from 0 to ${K - 1}`;
    return null;
  }

  // A share of rounded numbers; none for a count rounded to 0 (its true share is not 0).
  function shareOf(row) {
    return typeof row.count === "number" ? percent(row.share) : "–";
  }
  function profiledShareOf(row) {
    return typeof row.count === "number" && row.share_of_profiled !== null ? percent(row.share_of_profiled) : "–";
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

  // The numbers are a release's: "up to date" when no event has come since it, else how many wait for the next.
  function renderFreshness(asOf) {
    const waiting = asOf.behind === 1 ? "1 newer event waits" : `${asOf.behind.toLocaleString("en-US")} newer events wait`;
    setText("tile-fresh", asOf.behind === 0 ? "up to date" : waiting);
    setText("tile-fresh-note", `${asOf.behind === 0 ? "" : "for the next release · "}checked ${clock(asOf.answered_at)} · `
      + `release at log position ${asOf.sequence.toLocaleString("en-US")} of ${asOf.stream_sequence.toLocaleString("en-US")}`);
  }

  function renderRelease(snap) {
    setText("rounding-note", snap.release.note);
    main.dataset.release = String(snap.release.sequence || 0);
  }

  // ---- under-reached communities ------------------------------------------------------
  // Each card opens its group's drill-down: a plain link, so Tab reaches it and Enter opens it.
  function groupLink(snap, row) {
    const params = new URLSearchParams({ process_id: snap.process_id, group: row.group });
    if (snap.segment) params.set("segment", snap.segment.key);
    return `/dashboard/group?${params}`;
  }

  function renderUnder(snap) {
    const list = document.getElementById("under-reached");
    const items = snap.under_reached.map((row) => {
      const s = STATUS[row.status] || { icon: "?", text: row.status };
      return el("li", { class: `card ${row.status}`, "data-group": row.group, "data-status": row.status },
        el("a", { class: "who", href: groupLink(snap, row) }, row.label,
          el("span", { class: "visually-hidden", text: `, ${row.dimension_label}: channels, regions and weeks` })),
        el("span", { class: "dim", text: row.dimension_label }),
        el("span", { class: `state ${row.status}` }, el("span", { "aria-hidden": "true", text: `${s.icon} ` }), row.status_text),
        el("span", { class: "reach", text: row.reach_text }),
        el("span", { class: "open", "aria-hidden": "true", text: "Channels, regions, weeks →" }));
    });
    if (!items.length) items.push(el("li", { class: "empty-item" }, el("p", { class: "empty", text: "None right now." })));
    list.replaceChildren(...items);
  }

  // ---- people and engagements per channel --------------------------------------------------
  function renderChannels(snap) {
    const box = document.getElementById("channels");
    if (!snap.channels.length) {
      box.replaceChildren(el("p", { class: "empty", text: "Nothing recorded yet." }));
      return;
    }
    box.replaceChildren(el("table", { class: "cats", id: "channel-table" },
      el("thead", null, el("tr", null, el("th", { scope: "col", text: "Channel" }),
        el("th", { scope: "col", class: "num", text: "People" }), el("th", { scope: "col", class: "num", text: "Engagements" }))),
      el("tbody", null, ...snap.channels.map((c) => el("tr", { "data-channel": c.channel },
        el("th", { scope: "row", text: c.label }),
        el("td", { class: "num", title: countTitle(c.participants), text: count(c.participants) }),
        el("td", { class: "num", title: countTitle(c.engagements), text: count(c.engagements) }))))));
  }

  // ---- one table per dimension --------------------------------------------------------
  function bar(row) {
    const few = typeof row.count !== "number";
    const track = el("div", { class: few ? "bar few" : "bar", "aria-hidden": "true" });
    // A share target: the bar is the share. A minimum count: the bar is the way to that minimum.
    const minimum = row.target && row.target.min_count !== undefined;
    const width = minimum ? (row.ratio === null ? null : 100 * row.ratio) : row.share;
    if (!few && width !== null) {
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
      const meta = (dim.derived
        ? "Worked out from roles and answers; shares are of all participants."
        : `Answered ${count(dim.answered)} · declined ${count(dim.declined)} · not answered ${count(dim.not_answered)}`
          + (dim.multi_select ? " · several answers allowed, so shares can add up past 100%" : ""))
        + (dim.own_terms ? " · each term is the participant's own, in their words, shown in quotes as theirs" : "");
      const rows = dim.categories.map((row) => el("tr", null,
        el("th", { scope: "row", text: row.label }),
        el("td", { class: "num", title: countTitle(row.count), text: count(row.count) }),
        el("td", { class: "num", text: shareOf(row) }),
        el("td", { class: "num", text: dim.derived ? "–" : profiledShareOf(row) }),
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
              el("th", { scope: "col", class: "num", text: "Share", title: "Of those who answered the question" }),
              el("th", { scope: "col", class: "num", text: "Of all profiled",
                title: "Of everyone who gave a profile, those who declined or skipped the question included" }),
              el("th", { scope: "col", text: "Share and target" }),
              el("th", { scope: "col", class: "num", text: "Target" }), el("th", { scope: "col", text: "Status" }))),
            el("tbody", null, ...rows))));
    }));
  }

  // ---- participation over time ------------------------------------------------------------
  // Each cell and each week's total is rounded on its own: the bars stack the channels' numbers,
  // and a dark mark shows the week's total, which need not be their sum. "<K" cells draw nothing.
  function renderChart(snap) {
    const data = snap.over_time;
    const box = document.getElementById("chart");
    document.getElementById("time-hint").textContent = (snap.segment
      ? `Engagements per week by channel, of ${snap.segment.label}.`
      : "Engagements per week, by channel.")
      + " Each number is rounded on its own, so the channels need not add up to the week's total (the dark mark).";
    const colours = Object.fromEntries(data.channels.map((c, i) => [c.channel, CHANNEL_COLOURS[i % CHANNEL_COLOURS.length]]));
    if (!data.periods.length) {
      box.replaceChildren(el("p", { class: "empty", text: "Nothing recorded yet." }));
      document.getElementById("chart-table").replaceChildren();
      return;
    }
    const W = 800, H = 230, left = 40, bottom = 26, top = 10;
    const stacks = data.periods.map((p) => {
      const shown = data.channels.map((c) => [c, p.by_channel[c.channel]]).filter(([, v]) => typeof v === "number" && v > 0);
      const shownSum = shown.reduce((sum, [, v]) => sum + v, 0);
      return { p, shown, shownSum, total: typeof p.total === "number" ? p.total : 0 };
    });
    const max = Math.max(1, ...stacks.map((st) => Math.max(st.shownSum, st.total)));
    const scale = (H - top - bottom) / max;
    const step = (W - left) / stacks.length;
    const width = Math.max(2, Math.min(40, step * 0.7));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `Engagements per week, ${stacks.length} weeks, by channel` });
    for (const fraction of [0, 0.5, 1]) {
      const value = Math.round(max * fraction);
      const y = H - bottom - value * scale;
      chart.append(svg("line", { class: "gridline", x1: left, x2: W, y1: y, y2: y }));
      const label = svg("text", { class: "axis", x: left - 6, y: y + 4, "text-anchor": "end" });
      label.textContent = value;
      chart.append(label);
    }
    const labelEvery = Math.ceil(stacks.length / 10);
    stacks.forEach((st, i) => {
      const x = left + i * step + (step - width) / 2;
      let y = H - bottom;
      const group = svg("g", { "data-period": st.p.period, "data-total": String(st.p.total) });
      for (const [c, v] of st.shown) {
        const h = v * scale;
        y -= h;
        const rect = svg("rect", { x, y, width, height: h, fill: colours[c.channel] });
        const title = svg("title");
        title.textContent = `Week of ${st.p.period} · ${c.label}: ${v}`;
        rect.append(title);
        group.append(rect);
      }
      if (st.total > 0) {
        const ty = H - bottom - st.total * scale;
        const mark = svg("rect", { class: "total-mark", x: x - 3, y: ty - 1.5, width: width + 6, height: 3 });
        const title = svg("title");
        title.textContent = `Week of ${st.p.period} · all channels: ${st.p.total}`;
        mark.append(title);
        group.append(mark);
      }
      chart.append(group);
      if (i % labelEvery === 0) {
        const label = svg("text", { class: "axis", x: x + width / 2, y: H - 8, "text-anchor": "middle" });
        label.textContent = st.p.period.slice(5);
        chart.append(label);
      }
    });
    const legend = el("ul", { class: "legend" },
      ...data.channels.map((c) => {
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = colours[c.channel];
        return el("li", null, swatch, c.label);
      }),
      el("li", null, el("span", { class: "swatch total", "aria-hidden": "true" }), "All channels (the week's total)"));
    box.replaceChildren(chart, legend);

    const head = el("tr", null, el("th", { scope: "col", text: "Week of" }),
      ...data.channels.map((c) => el("th", { scope: "col", class: "num", text: c.label })),
      el("th", { scope: "col", class: "num", text: "All" }));
    const body = data.periods.map((p) => el("tr", null, el("th", { scope: "row", text: p.period }),
      ...data.channels.map((c) => el("td", { class: "num", title: countTitle(p.by_channel[c.channel]), text: count(p.by_channel[c.channel]) })),
      el("td", { class: "num", title: countTitle(p.total), text: count(p.total) })));
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
    renderRelease(snap);
    renderTiles(snap);
    renderFreshness(snap.as_of);
    renderUnder(snap);
    renderChannels(snap);
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
