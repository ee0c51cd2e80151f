// streams monitor dashboard: polls /api/state every 2 s and draws everything as inline SVG.
// No framework, no build step, nothing fetched from the internet.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const STATUSES = ["OK", "WARN", "STALL", "STOP", "REWIND", "ERR"];
const PALETTE = ["#2f6fde", "#e8590c", "#1f9d55", "#9c36b5", "#d6336c", "#0b7285", "#5c940d"];

// graph geometry (px)
const BOX_W = 230, BOX_H = 132, COL_GAP = 170, ROW_GAP = 36, TOPIC_W = 170, TOPIC_H = 26, PAD = 16;

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmtCount(n) {
  if (n === null || n === undefined) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return s.toFixed(2) + " s";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.round(s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.round((s % 3600) / 60) + "m";
}

function statusOf(value) {
  return STATUSES.includes(value) ? value : "UNKNOWN";
}

function badge(status) {
  return html("span", { class: "badge s-" + statusOf(status) }, status || "?");
}

// The replay tasks affecting a group (a redrive or copy into its input, a recent reset): the
// status is kept, and the mark says which task explains it (streams.lag.marks).
function replayText(marks, explainedBy) {
  if (!marks || !marks.length) return "";
  if (explainedBy) return "explained by " + explainedBy;
  return "replay: " + marks.map((m) => `${m.kind} task ${m.task} (${m.status})`).join("; ");
}

function short(topic) {
  return topic.length > 24 ? "…" + topic.slice(-23) : topic;
}

// ---- pipeline graph ----

function drawGraph(pipeline) {
  const stages = pipeline.stages;
  const hasSources = stages.some((s) => s.external_inputs.length > 0);
  const consumed = new Set(stages.flatMap((s) => s.inputs));
  const terminal = stages.map((s) => s.outputs.filter((t) => !consumed.has(t)));
  const hasSinks = terminal.some((t) => t.length > 0);
  const layers = Math.max(...stages.map((s) => s.layer)) + 1;
  const rows = Math.max(...stages.map((s) => s.row)) + 1;
  const left = PAD + (hasSources ? TOPIC_W + 60 : 0);
  const width = left + layers * BOX_W + (layers - 1) * COL_GAP + (hasSinks ? 60 + TOPIC_W : 0) + PAD;
  const height = PAD * 2 + rows * BOX_H + (rows - 1) * ROW_GAP + 10;
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "pipeline " + pipeline.name });
  const defs = el("defs");
  const marker = el("marker", { id: "arrow-" + pipeline.name, viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#7b8794" }));
  defs.append(marker);
  svg.append(defs);
  const arrow = `url(#arrow-${pipeline.name})`;
  const pos = {};
  for (const s of stages) {
    pos[s.name] = { x: left + s.layer * (BOX_W + COL_GAP), y: PAD + s.row * (BOX_H + ROW_GAP) };
  }
  const state = pipeline.stage_state || {};

  function topicPill(x, y, topic) {
    svg.append(el("rect", { class: "topic", x, y, width: TOPIC_W, height: TOPIC_H, rx: 13 }));
    const t = el("text", { class: "topic-text", x: x + TOPIC_W / 2, y: y + 17, "text-anchor": "middle" }, short(topic));
    t.append(el("title", {}, topic));
    svg.append(t);
  }

  for (const edge of pipeline.edges) {
    const a = pos[edge.from], b = pos[edge.to];
    const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x - 2, y2 = b.y + BOX_H / 2;
    const mx = (x1 + x2) / 2;
    svg.append(el("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
      "marker-end": arrow }));
    const label = el("text", { class: "edge-label", x: mx, y: (y1 + y2) / 2 - 7, "text-anchor": "middle" }, short(edge.topic));
    label.append(el("title", {}, edge.topic));
    svg.append(label);
  }

  stages.forEach((s, i) => {
    const { x, y } = pos[s.name];
    s.external_inputs.forEach((topic, k) => {
      const ty = y + BOX_H / 2 - TOPIC_H / 2 + (k - (s.external_inputs.length - 1) / 2) * (TOPIC_H + 6);
      topicPill(PAD, ty, topic);
      svg.append(el("path", { class: "edge", d: `M${PAD + TOPIC_W},${ty + TOPIC_H / 2} L${x - 2},${y + BOX_H / 2}`,
        "marker-end": arrow }));
    });
    terminal[i].forEach((topic, k) => {
      const tx = x + BOX_W + 60;
      const ty = y + BOX_H / 2 - TOPIC_H / 2 + (k - (terminal[i].length - 1) / 2) * (TOPIC_H + 6);
      svg.append(el("path", { class: "edge", d: `M${x + BOX_W},${y + BOX_H / 2} L${tx - 2},${ty + TOPIC_H / 2}`,
        "marker-end": arrow }));
      topicPill(tx, ty, topic);
    });
    const st = state[s.group] || {};
    const status = statusOf(st.status);
    const g = el("g", { class: "stage", "data-stage": s.name, "data-status": status });
    g.append(el("rect", { class: "box", x, y, width: BOX_W, height: BOX_H, rx: 8 }));
    g.append(el("rect", { class: "band s-" + status, x, y, width: 6, height: BOX_H, rx: 3 }));
    g.append(el("text", { class: "name", x: x + 18, y: y + 24 }, s.name));
    g.append(el("rect", { class: "s-" + status, x: x + BOX_W - 78, y: y + 10, width: 66, height: 19, rx: 9.5 }));
    g.append(el("text", { class: "status-text stage-status", x: x + BOX_W - 45, y: y + 23.5, "text-anchor": "middle" }, status));
    const replay = replayText(st.replay, st.explained_by);
    if (replay) {
      const mark = el("text", { class: "replay-mark", x: x + 18, y: y + 38, "data-field": "replay",
        "data-explained": st.explained_by ? "1" : "0" }, replay.length > 34 ? replay.slice(0, 33) + "…" : replay);
      mark.append(el("title", {}, replay));
      g.append(mark);
    }
    const retryTitle = Object.entries(st.retry_backlog || {}).map(([t, n]) => `${t}: ${n}`).join("\n");
    const lines = [
      ["lag", `${fmtCount(st.lag)}  (${fmtSeconds(st.lag_seconds)})`],
      ["throughput", st.throughput === null || st.throughput === undefined ? "–" : fmtCount(st.throughput) + " /s"],
      ["retry backlog", fmtCount(st.retry_total)],
      ["DLQ depth", fmtCount(st.dlq_depth) + (st.dlq_inflow_per_s ? `  (+${fmtCount(st.dlq_inflow_per_s)}/s)` : "")],
      // running/desired from the supervisors' records; else the workers that publish stats
      ["workers", (st.workers_desired === null || st.workers_desired === undefined
        ? `${st.workers ?? 0}` : `${st.workers_running}/${st.workers_desired}`)
        + (st.breakers && st.breakers.length
        ? "  · " + st.breakers.map(([n, v]) => `${n} ${v}`).join(", ") : "")],
    ];
    lines.forEach(([label, value], k) => {
      const ly = y + 48 + k * 17;
      g.append(el("text", { class: "label", x: x + 18, y: ly }, label));
      const v = el("text", { class: "value", x: x + BOX_W - 12, y: ly, "text-anchor": "end",
        "data-field": label.split(" ")[0] }, value);
      if (label === "retry backlog" && retryTitle) v.append(el("title", {}, retryTitle));
      g.append(v);
    });
    const stateLine = (s.state_topics || []).length
      ? `\nstate: ${s.state_topics.join(", ")}, ${fmtCount(st.state_keys)} keys`
        + (st.restoring ? `, restoring ${fmtCount(st.restore_restored)} / ${fmtCount(st.restore_to_restore)}` : "")
      : "";
    const tip = el("title", {}, `${s.group}\nrule: ${st.rule || "–"}${stateLine}`
      + (replay ? `\n${replay}` : ""));
    g.append(tip);
    svg.append(g);
  });
  return svg;
}

// ---- line charts ----

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function clock(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 8);
}

function drawChart(kind, series, unit) {
  // series: [{name, color, t: [...], v: [...]}]
  const W = 640, H = 210, L = 52, R = 12, T = 10, B = 26;
  const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, "data-chart": kind });
  const ts = series.flatMap((s) => s.t);
  const vs = series.flatMap((s) => s.v.filter((x) => x !== null && x !== undefined));
  svg.append(el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  if (ts.length < 2 || vs.length === 0) {
    svg.append(el("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "collecting samples…"));
    return svg;
  }
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1);
  const vmax = 4 * niceMax(Math.max(...vs) / 4);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / vmax) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (vmax * i) / 4;
    svg.append(el("line", { class: "axis", x1: L, y1: y(v), x2: W - R, y2: y(v), "stroke-dasharray": i ? "3 4" : "" }));
    svg.append(el("text", { class: "tick", x: L - 6, y: y(v) + 3.5, "text-anchor": "end" }, fmtCount(v) + unit));
  }
  for (let i = 0; i <= 3; i++) {
    const t = t0 + ((t1 - t0) * i) / 3;
    svg.append(el("text", { class: "tick", x: x(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle" }, clock(t)));
  }
  for (const s of series) {
    let d = "", pen = "M", points = 0;
    s.t.forEach((t, i) => {
      const v = s.v[i];
      if (v === null || v === undefined) { pen = "M"; return; }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
      points += 1;
    });
    if (points) svg.append(el("path", { class: "series", d, stroke: s.color, "data-series": s.name, "data-points": points }));
  }
  return svg;
}

function chartBox(title, kind, series, unit) {
  const box = html("div", { class: "chart-box" });
  box.append(html("h3", {}, title));
  box.append(drawChart(kind, series, unit));
  const legend = html("div", { class: "legend" });
  for (const s of series) {
    const item = html("span");
    const swatch = html("i");
    swatch.style.background = s.color;
    item.append(swatch, document.createTextNode(s.name));
    legend.append(item);
  }
  box.append(legend);
  return box;
}

function renderPipelines(state) {
  const root = document.getElementById("pipelines");
  root.replaceChildren();
  for (const p of state.pipelines) {
    const card = html("section", { class: "card pipeline", "data-pipeline": p.name });
    const h = html("h2", {}, "Pipeline " + p.name);
    h.append(html("span", { class: "sub" }, "end-to-end lag " + fmtSeconds(p.end_to_end_lag_seconds)));
    card.append(h);
    const graph = html("div", { class: "graph" });
    graph.append(drawGraph(p));
    card.append(graph);
    const series = (field) => p.stages.map((s, i) => {
      const h = state.history[s.group] || { t: [], lag: [], throughput: [] };
      return { name: s.name, color: PALETTE[i % PALETTE.length], t: h.t, v: h[field] };
    });
    const charts = html("div", { class: "charts" });
    charts.append(chartBox("Lag per stage (records)", "lag", series("lag"), ""));
    charts.append(chartBox("Throughput per stage (records/s)", "throughput", series("throughput"), ""));
    card.append(charts);
    root.append(card);
  }
}

function cell(text, cls) {
  return html("td", cls ? { class: cls } : {}, text);
}

function renderGroups(state) {
  const body = document.querySelector("#groups tbody");
  body.replaceChildren();
  const others = state.groups.filter((g) => !g.in_pipeline);
  if (!others.length) {
    const tr = html("tr");
    tr.append(html("td", { class: "empty", colspan: 9 }, "no other consumer groups"));
    body.append(tr);
  }
  for (const g of others) {
    const tr = html("tr", { "data-group": g.group });
    const members = Array.isArray(g.members) ? g.members.length : g.members;
    const status = html("td");
    status.append(badge(g.status));
    const rule = cell(g.rule || "", "rule");
    rule.title = g.rule || "";
    const replay = replayText(g.replay, g.explained_by);
    if (replay) {
      rule.append(html("div", { class: "replay-mark", "data-field": "replay",
        "data-explained": g.explained_by ? "1" : "0" }, replay));
      rule.title += "\n" + replay;
    }
    tr.append(cell(g.group), status, rule, cell(g.state || ""), cell(String(members ?? "")),
      cell(String(g.partition_count ?? (g.partitions || []).length), "num"),
      cell(fmtCount(g.sum_lag), "num"), cell(fmtCount(g.max_lag), "num"),
      cell(fmtSeconds(g.max_lag_seconds), "num"));
    body.append(tr);
  }
}

function renderWorkers(state) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  if (!state.workers.length) {
    const tr = html("tr");
    tr.append(html("td", { class: "empty", colspan: 10 }, "no worker has published stats recently"));
    body.append(tr);
  }
  for (const w of state.workers) {
    const tr = html("tr", { "data-worker": `${w.group}/${w.slot}` });
    const deps = html("td");
    for (const d of w.dependencies || []) {
      deps.append(html("span", { class: "dep-" + d.state }, `${d.name}: ${d.state} `));
    }
    tr.append(cell(`${w.group}/${w.slot}`), cell(`${w.host || "?"} / ${w.pid || "?"}`),
      cell(fmtCount(w.consumed), "num"), cell(fmtCount(w.produced), "num"),
      cell(fmtCount(w.retried), "num"), cell(fmtCount(w.dead_lettered), "num"),
      cell(`${fmtCount(w.transactions_committed)} / ${fmtCount(w.transactions_aborted)}`, "num"),
      cell(fmtCount(w.consumed_per_s), "num"), deps,
      cell(fmtSeconds(Math.max(0, Date.now() / 1000 - w.ts_ms / 1000)), "num"));
    body.append(tr);
  }
}

// ---- freshness: the data's age on the monitor's clock, and the stale banner ----

const fresh = { takenAt: null, servedAt: null, fetchedAt: null, staleAfter: null, error: null, errors: 0, reachable: true };

function dataAge() {
  if (!(fresh.takenAt > 0) || fresh.servedAt === null) return null;
  return Math.max(0, fresh.servedAt - fresh.takenAt + (performance.now() - fresh.fetchedAt) / 1000);
}

function renderFreshness() {
  const age = dataAge();
  const ageText = document.getElementById("data-age");
  ageText.textContent = age === null ? "no data yet" : "data " + fmtSeconds(age) + " old";
  const failed = fresh.error !== null && fresh.error !== undefined;  // "" is a failure too
  const stale = age === null || (fresh.staleAfter !== null && age > fresh.staleAfter);
  const banner = document.getElementById("error");
  let text = "", kind = "";
  if (!fresh.reachable) {
    kind = "unreachable";
    text = "Cannot reach the monitor: " + fresh.error;
  } else if (stale) {
    kind = "stale";
    text = age === null ? "No successful sample yet"
      : `Stale data: the last successful sample is ${fmtSeconds(age)} old (stale after ${fmtSeconds(fresh.staleAfter)})`;
    if (failed) text += `; the last sample failed (${fresh.errors} so far): ${fresh.error || "no message given"}`;
  } else if (failed) {
    kind = "failed";
    text = `Last sample failed (${fresh.errors} so far), showing the last good one: ${fresh.error || "no message given"}`;
  }
  banner.hidden = !kind;
  banner.dataset.state = kind;
  banner.textContent = text;
  ageText.dataset.stale = stale ? "1" : "0";
}

async function refresh() {
  try {
    const response = await fetch("api/state?partitions=0", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const state = await response.json();
    const served = Number(response.headers.get("X-Streams-Served-At"));
    Object.assign(fresh, {
      takenAt: state.taken_at, servedAt: Number.isFinite(served) && served > 0 ? served : Date.now() / 1000,
      fetchedAt: performance.now(), staleAfter: state.stale_after_s ?? null,
      error: state.error, errors: state.errors, reachable: true,
    });
    document.getElementById("cluster").textContent = "cluster " + state.cluster_name;
    document.getElementById("last-sample").textContent = state.taken_at > 0
      ? `sampled ${clock(state.taken_at)} every ${state.interval_s} s (${state.sample_ms} ms)` : "no sample yet";
    renderPipelines(state);
    renderGroups(state);
    renderWorkers(state);
  } catch (error) {
    Object.assign(fresh, { reachable: false, error: String(error) });
  }
  renderFreshness();
}

refresh();
setInterval(refresh, REFRESH_MS);
setInterval(renderFreshness, 500);
