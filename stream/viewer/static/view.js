// PCMANet Live viewer: one tile per stream, its picture (mask drawn over the frame by the
// server) and its figures, both pushed over one WebSocket (see stream/viewer/server.py).
"use strict";

const token = new URLSearchParams(location.search).get("token");
const grid = document.getElementById("grid");
const conn = document.getElementById("conn");
const empty = document.getElementById("empty");
const tiles = new Map();          // key -> {el, canvas, cells, badge, busy, next}
const FIGURES = [
  ["fps_in", "FPS in"], ["fps_out", "FPS out"], ["latency_ms", "latency ms"],
  ["audio_lag_ms", "audio lag ms"], ["keep_ratio", "keep ratio"], ["drops", "drops"],
  ["seq", "seq"], ["masks", "masks"],
];

function number(x, digits) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function tileFor(key) {
  let t = tiles.get(key);
  if (t) return t;
  const el = document.createElement("section");
  el.className = "tile";
  el.dataset.stream = key;
  const h = document.createElement("h2");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = key;
  const badge = document.createElement("span");
  badge.className = "state";
  badge.dataset.fig = "state";
  h.append(name, badge);
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 240;
  canvas.dataset.seq = "-1";
  const dl = document.createElement("dl");
  const cells = {};
  for (const [fig, label] of FIGURES) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.dataset.fig = fig;
    cells[fig] = dd;
    dl.append(dt, dd);
  }
  el.append(h, canvas, dl);
  const after = [...tiles.keys()].filter((k) => k > key).sort()[0];
  grid.insertBefore(el, after === undefined ? null : tiles.get(after).el);
  t = { el, name, canvas, cells, badge, busy: false, next: null };
  tiles.set(key, t);
  empty.hidden = true;
  return t;
}

function showFigures(f) {
  const t = tileFor(f.key);
  t.name.textContent = f.stream;
  t.name.title = f.source;
  t.badge.textContent = f.state;
  t.badge.className = "state " + f.state;
  t.badge.title = f.why || "";
  t.el.dataset.state = f.state;
  t.cells.fps_in.textContent = number(f.fps_in, 1);
  t.cells.fps_out.textContent = number(f.fps_out, 1);
  t.cells.latency_ms.textContent = number(f.latency_ms, 0);
  t.cells.audio_lag_ms.textContent =
    number(f.audio_lag_ms, 0) + (f.audio_late ? " (late)" : "");
  t.cells.keep_ratio.textContent = number(f.keep_ratio, 2);
  const d = f.drops;
  t.cells.drops.textContent = String(d.total);
  t.cells.drops.title =
    `socket ${d.socket}, before the engine ${d.ring}, hand-over ${d.handoff}, missed ${d.missed}`;
  t.cells.seq.textContent = f.seq === null ? "–" : String(f.seq);
  t.cells.masks.textContent = String(f.masks);
}

function draw(t, head, jpeg) {
  if (t.busy) {                  // one decode at a time per tile; only the newest waits
    t.next = [head, jpeg];
    return;
  }
  t.busy = true;
  createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }))
    .then((bitmap) => {
      if (t.canvas.width !== bitmap.width) t.canvas.width = bitmap.width;
      if (t.canvas.height !== bitmap.height) t.canvas.height = bitmap.height;
      t.canvas.getContext("2d").drawImage(bitmap, 0, 0);
      bitmap.close();
      t.canvas.dataset.seq = String(head.seq);
      t.canvas.dataset.hasFrame = String(head.has_frame);
      t.canvas.dataset.drawn = String(Number(t.canvas.dataset.drawn || 0) + 1);
    })
    .catch((err) => console.warn("picture not drawn", err))
    .finally(() => {
      t.busy = false;
      const next = t.next;
      t.next = null;
      if (next) draw(t, ...next);
    });
}

function onMessage(event) {
  if (typeof event.data === "string") {
    const msg = JSON.parse(event.data);
    if (msg.type === "streams") msg.streams.forEach(showFigures);
    return;
  }
  const view = new DataView(event.data);
  const n = view.getUint32(0);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, n)));
  draw(tileFor(head.key), head, event.data.slice(4 + n));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { conn.textContent = "connected"; document.body.dataset.ws = "open"; };
  ws.onmessage = onMessage;
  ws.onclose = () => {
    conn.textContent = "viewer server gone: retrying";
    document.body.dataset.ws = "closed";
    setTimeout(connect, 1000);
  };
}

connect();
