// oashare dashboard: the node's status from /events (server-sent events,
// one a second), a file's chunk map from /api/where. No external asset.
"use strict";

const $ = (id) => document.getElementById(id);

function size(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(1) + " " + units[i];
}

function text(el, s) { el.textContent = s; }

function cell(tr, s, cls) {
  const td = document.createElement("td");
  td.textContent = s;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

let prev = null;

function rate(now, before, key, secs) {
  if (!before || secs <= 0) return "–";
  return size(Math.max(0, (now[key] - before[key]) / secs)) + "/s";
}

function render(s) {
  text($("who"), (s.name ? s.name + " · " : "") + s.node_id.slice(0, 8) + " · network " + s.network + " · " + s.mountpoint);
  const peers = new Map((s.peers || []).map((p) => [p.id, p]));
  const tbody = $("peers").querySelector("tbody");
  tbody.replaceChildren();
  const rows = (s.member_list || []).filter((m) => !m.removed);
  rows.sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name));
  for (const m of rows) {
    const tr = document.createElement("tr");
    tr.dataset.id = m.id;
    const live = peers.get(m.id);
    const state = m.self ? "self" : live ? "up" : "down";
    tr.dataset.state = state;
    cell(tr, m.id.slice(0, 8));
    cell(tr, m.name);
    cell(tr, m.addr || "–");
    const st = cell(tr, m.self ? "this node" : live ? "up" : "down, last seen " + m.last_seen);
    const dot = document.createElement("span");
    dot.className = "dot " + state;
    st.prepend(dot);
    let held = "–", free = "–";
    if (m.self) { held = size(s.bytes); free = size(s.disk_free); }
    else if (live && live.bytes_held !== undefined) { held = size(live.bytes_held); free = size(live.disk_free); }
    cell(tr, held, "num");
    cell(tr, free, "num");
    tbody.appendChild(tr);
  }
  const secs = prev ? (Date.parse(s.at) - Date.parse(prev.at)) / 1000 : 0;
  text($("rate-read"), rate(s, prev, "bytes_read", secs));
  text($("rate-write"), rate(s, prev, "bytes_written", secs));
  text($("rate-fetch"), rate(s, prev, "bytes_fetched", secs));
  const rs = prev ? { a: s.repair.copied_bytes, b: prev.repair.copied_bytes } : null;
  text($("rate-repair"), rs && secs > 0 ? size(Math.max(0, (rs.a - rs.b) / secs)) + "/s" : "–");
  const setH = (id, v, bad) => { const el = $(id); text(el, v); el.className = bad ? "bad" : ""; };
  setH("h-pending", s.pending_versions + " file versions", s.pending_versions > 0);
  setH("h-below", s.groups_below_target + " groups, " + s.tree_nodes_below_target + " tree nodes", s.groups_below_target > 0);
  setH("h-unavailable", s.unavailable + " operations since start", s.unavailable > 0);
  const p = s.pinned || {};
  setH("h-pinned", p.files ? p.files + " files, " + size(p.bytes) + (p.not_whole ? ", " + p.not_whole + " not whole yet" : ", all here") : "nothing", p.not_whole > 0);
  setH("h-stored", s.chunks + " chunks, " + size(s.bytes), false);
  prev = s;
}

function connect() {
  const es = new EventSource("/events");
  es.addEventListener("status", (e) => {
    $("live").className = "badge on";
    text($("live"), "live");
    render(JSON.parse(e.data));
  });
  es.onerror = () => {
    $("live").className = "badge";
    text($("live"), "offline");
  };
}

// The chunk map: one cell per group of 256 chunks (128 KiB), coloured by
// the fewest live copies of its chunks against --replicas: a group on
// fewer live peers than that shows so even when fewer peers are up.
let mapPath = "";

async function showMap() {
  if (!mapPath) return;
  const r = await fetch("/api/where?path=" + encodeURIComponent(mapPath));
  if (!r.ok) {
    text($("map-info"), mapPath + ": " + (await r.text()).trim());
    $("map").replaceChildren();
    return;
  }
  const w = await r.json();
  const need = w.replicas;
  const groups = new Map();
  for (const c of w.chunks || []) {
    const g = Math.floor(c.index / 256);
    const n = (c.holders || []).length;
    groups.set(g, groups.has(g) ? Math.min(groups.get(g), n) : n);
  }
  const map = $("map");
  map.replaceChildren();
  let full = 0, below = 0, none = 0;
  for (const g of [...groups.keys()].sort((a, b) => a - b)) {
    const n = groups.get(g);
    const d = document.createElement("span");
    const kind = n === 0 ? "none" : n < need ? "below" : "full";
    if (kind === "full") full++; else if (kind === "below") below++; else none++;
    d.className = "cell " + kind;
    d.dataset.copies = n;
    d.title = "group " + g + " (bytes " + g * 131072 + "–" + Math.min(w.size, (g + 1) * 131072) + "): " + n + " live copies";
    map.appendChild(d);
  }
  text($("map-info"), w.path + ": " + size(w.size) + ", " + groups.size + " groups: " + full + " with enough copies, " + below + " below target, " + none + " with no live copy (--replicas " + need + ", " + w.live_nodes + " live nodes)");
}

async function listNames() {
  const r = await fetch("/api/ls?path=/");
  if (!r.ok) return;
  const dl = $("names");
  dl.replaceChildren();
  for (const e of await r.json()) {
    const o = document.createElement("option");
    o.value = "/" + e.name + (e.dir ? "/" : "");
    dl.appendChild(o);
  }
}

$("pick").addEventListener("submit", (e) => {
  e.preventDefault();
  mapPath = $("path").value.trim();
  showMap();
});
setInterval(showMap, 2000);
connect();
listNames();
