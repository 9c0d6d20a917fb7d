// wirewise demo: one chat over five transports, with the browser's own APIs. No framework, no
// build step; every message is shown with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const WIRE_LINES = 8;
const BURST = 1000;
const HELD_WAIT_S = 25;

const state = {
  session: null, // the open subscription: {transport, room, token, stop(), drop()}
  lastId: null,
  latencies: [],
  requests: 0,
  frames: 0,
  received: 0,
  reconnects: 0,
  seen: new Set(),
  wire: [],
  six: [],
};

// -- clock, names, numbers ------------------------------------------------------------------

function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function randomName() {
  return "user" + Math.floor(Math.random() * 1e6);
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const rank = Math.max(0, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[rank];
}

function fmt(ms) {
  return ms === null ? "-" : ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0);
}

// -- what the page shows --------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

function showWire(line) {
  state.wire.push(line.length > 300 ? line.slice(0, 300) + "…" : line);
  if (state.wire.length > WIRE_LINES) state.wire.shift();
  $("wire").textContent = state.wire.join("\n");
}

let figuresDue = null;

function showFigures() {
  // at most every 100 ms: sorting every latency on every message would make the page itself
  // the bottleneck of a burst, and a message's arrival waits for the handler before it
  if (figuresDue === null) figuresDue = setTimeout(drawFigures, 100);
}

function drawFigures() {
  figuresDue = null;
  for (const id of ["messages", "notices"]) $(id).scrollTop = $(id).scrollHeight;
  const sorted = [...state.latencies].sort((a, b) => a - b);
  $("p50").textContent = fmt(percentile(sorted, 50));
  $("p99").textContent = fmt(percentile(sorted, 99));
  $("count").textContent = String(sorted.length);
  const per = (n) => (state.received ? (n / state.received).toFixed(2) : "-");
  $("requests").textContent = per(state.requests);
  $("frames").textContent = per(state.frames);
  $("reconnects").textContent = String(state.reconnects);
  const fetched = performance
    .getEntriesByType("resource")
    .filter((e) => e.name.includes("/rooms/") && e.transferSize > 0);
  const bytes = fetched.reduce((sum, e) => sum + e.transferSize, 0);
  $("bytes").textContent =
    state.received && fetched.length ? (bytes / state.received).toFixed(0) : "n/a";
}

function showProtocol() {
  const entries = performance.getEntriesByType("navigation");
  const protocol = entries.length ? entries[0].nextHopProtocol : "";
  $("protocol").textContent =
    protocol === "h2" ? "HTTP/2" : protocol === "http/1.1" ? "HTTP/1.1" : protocol || "HTTP";
  const h2 = document.querySelector('#transport option[value="h2"]');
  if (location.protocol !== "https:") {
    h2.disabled = true;
    h2.textContent += " (needs wirewise demo --tls)";
  }
}

// -- every transport delivers here ----------------------------------------------------------

function deliver(message, raw) {
  showWire(raw);
  if (message.type === "gap") {
    state.lastId = message.oldest_available - 1;
    addLine(`(gap: events after ${message.requested_after} are gone)`, "gap");
    return;
  }
  if (message.type === "error") {
    addLine(`(error ${message.code}: ${message.detail})`, "error");
    return;
  }
  if (message.type === "ack") return; // an answer to our send: its id is not a cursor
  if (typeof message.id === "number") {
    if (state.lastId !== null && message.id <= state.lastId) return; // seen before a reconnect
    state.lastId = message.id;
  }
  if (message.type === "new_message") {
    const key = `${message.from}:${message.client_msg_id}`;
    if (state.seen.has(key)) return;
    state.seen.add(key);
    state.received += 1;
    if (typeof message.sent_at === "number") {
      state.latencies.push((nowUs() - message.sent_at) / 1000);
    }
    addLine(`${message.from}: ${message.text}`, "message");
  } else if (message.type === "user_joined" || message.type === "user_left") {
    addLine(`(${message.user} ${message.type === "user_joined" ? "joined" : "left"})`, "presence");
  }
  showFigures();
}

function addLine(text, kind) {
  // #messages holds one item per chat message received; joins, leaves, gaps and errors go to
  // #notices, so that the list is exactly the conversation
  const item = document.createElement("li");
  item.textContent = text; // text, never HTML
  item.className = kind;
  const list = $(kind === "message" ? "messages" : "notices");
  list.append(item);
  while (list.children.length > (kind === "message" ? 2000 : 50)) list.firstChild.remove();
  showFigures(); // scrolls too, at most every 100 ms: reading scrollHeight forces a layout
}

function parse(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return { type: "error", code: "bad_json", detail: String(raw).slice(0, 80) };
  }
}

// -- the transports -------------------------------------------------------------------------

function authHeaders(token) {
  return { authorization: `Bearer ${token}`, "content-type": "application/json" };
}

function cursor() {
  return state.lastId === null ? "" : `after=${state.lastId}`;
}

function poller(room, token, wait) {
  // short polling (wait 0: answers at once, then waits T) or long polling (held up to wait s)
  let stopped = false;
  let controller = null;
  async function loop() {
    while (!stopped) {
      const query = [cursor(), wait ? `wait=${wait}` : ""].filter(Boolean).join("&");
      controller = new AbortController();
      try {
        state.requests += 1;
        const answer = await fetch(`/rooms/${room}/events${query ? "?" + query : ""}`, {
          headers: authHeaders(token),
          signal: controller.signal,
        });
        const text = await answer.text();
        if (!answer.ok) throw new Error(`HTTP ${answer.status}: ${text.slice(0, 80)}`);
        const body = parse(text);
        state.frames += 1;
        setStatus(`${wait ? "long" : "short"} polling room ${room}`);
        if (state.lastId === null && typeof body.last_id === "number") state.lastId = body.last_id;
        for (const event of body.events || []) deliver(event, JSON.stringify(event));
        if (!body.events || !body.events.length) showWire(text);
      } catch (error) {
        if (stopped) return;
        state.reconnects += 1;
        setStatus(`poll failed (${error.message || error}); asking again from ${state.lastId}`);
        await sleep(300);
        continue;
      }
      if (!wait) await sleep(Number($("interval").value) || 1000);
    }
  }
  loop();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}

function stream(room, token) {
  // EventSource: the browser reconnects by itself, sending Last-Event-ID
  const url = `/rooms/${room}/stream?token=${encodeURIComponent(token)}${
    state.lastId === null ? "" : "&" + cursor()
  }`;
  const source = new EventSource(url);
  let opened = false;
  source.onopen = () => {
    if (opened) state.reconnects += 1;
    opened = true;
    setStatus(`streaming room ${room} (EventSource)`);
    showFigures();
  };
  source.onerror = () => setStatus("stream dropped: EventSource retries with Last-Event-ID");
  for (const type of ["new_message", "user_joined", "user_left", "gap", "chat_error"]) {
    source.addEventListener(type, (event) => {
      state.frames += 1;
      const head = event.lastEventId ? `id: ${event.lastEventId}\n` : "";
      deliver(parse(event.data), `${head}event: ${type}\ndata: ${event.data}`);
    });
  }
  return { stop: () => source.close() };
}

function socket(room, token) {
  // WebSocket: on any close the page reconnects itself, resuming from its last id
  let stopped = false;
  let ws = null;
  let attempt = 0;
  function open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = [`token=${encodeURIComponent(token)}`, cursor()].filter(Boolean).join("&");
    ws = new WebSocket(`${scheme}://${location.host}/rooms/${room}/ws?${query}`);
    ws.onopen = () => {
      if (attempt) state.reconnects += 1;
      attempt = 0;
      setStatus(`socket open on room ${room}`);
      showFigures();
    };
    ws.onmessage = (event) => {
      state.frames += 1;
      deliver(parse(event.data), event.data);
    };
    ws.onclose = (event) => {
      if (stopped) return;
      attempt += 1;
      setStatus(`socket closed (${event.code}); reopening from id ${state.lastId}`);
      setTimeout(open, Math.min(3000, 100 * 2 ** attempt * Math.random()));
    };
  }
  open();
  return {
    stop() {
      stopped = true;
      if (ws) ws.close(1000);
    },
    send(message) {
      if (!ws || ws.readyState !== WebSocket.OPEN) throw new Error("the socket is not open");
      ws.send(JSON.stringify(message));
    },
  };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// -- join, send, leave ----------------------------------------------------------------------

async function login(user) {
  const answer = await fetch("/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = await answer.json();
  if (!answer.ok) throw new Error(`${body.code}: ${body.detail}`);
  return body.token;
}

async function join() {
  leave();
  const transport = $("transport").value;
  const room = $("room").value.trim();
  const user = $("user").value.trim() || randomName();
  $("user").value = user;
  try {
    const token = await login(user);
    Object.assign(state, { lastId: null, latencies: [], requests: 0, frames: 0, received: 0 });
    Object.assign(state, { reconnects: 0, seen: new Set(), wire: [] });
    $("messages").textContent = "";
    $("notices").textContent = "";
    const opened =
      transport === "poll"
        ? poller(room, token, 0)
        : transport === "longpoll"
          ? poller(room, token, HELD_WAIT_S)
          : transport === "ws"
            ? socket(room, token)
            : stream(room, token);
    state.session = { transport, room, token, ...opened };
    for (const id of ["text", "send", "leave", "drop", "burst"]) $(id).disabled = false;
    $("note").textContent = NOTES[transport];
    setStatus(`joining ${room} as ${user} over ${transport}…`);
    showFigures();
  } catch (error) {
    setStatus(`could not join: ${error.message || error}`);
  }
}

function leave() {
  if (state.session) state.session.stop();
  state.session = null;
  for (const id of ["text", "send", "leave", "drop", "burst"]) $(id).disabled = true;
  setStatus("not connected");
}

async function sendText(text) {
  const session = state.session;
  if (!session) return;
  const message = {
    type: "send_message",
    room: session.room,
    text,
    client_msg_id: Math.random().toString(36).slice(2, 14),
    sent_at: nowUs(),
  };
  if (session.send) {
    session.send(message);
    return;
  }
  state.requests += 1;
  const answer = await fetch(`/rooms/${session.room}/messages`, {
    method: "POST",
    headers: authHeaders(session.token),
    body: JSON.stringify(message),
  });
  if (!answer.ok) {
    const body = parse(await answer.text());
    setStatus(`send refused: ${body.code || answer.status} ${body.detail || ""}`);
  }
}

const NOTES = {
  poll: "Each poll is a whole HTTP request, answered at once, empty or not: a message waits for the next one (T/2 on average).",
  longpoll: "The server holds each request until a message exists; after each answer the page asks again, a round trip during which messages wait.",
  sse: "One response that never ends, one event per message; sends are separate POSTs.",
  h2: "The same EventSource and POSTs, multiplexed as streams of one HTTP/2 connection.",
  ws: "One upgraded connection, one frame per message both ways.",
};

// -- experiments ----------------------------------------------------------------------------

function openSeven() {
  closeSeven();
  const started = performance.now();
  const token = state.session ? state.session.token : null;
  const room = `six-${Math.floor(Math.random() * 1e6)}`;
  const run = async () => {
    const auth = token || (await login(randomName()));
    for (let i = 0; i < 7; i++) {
      const source = new EventSource(`/rooms/${room}-${i}/stream?token=${encodeURIComponent(auth)}`);
      const entry = { source, openedMs: null };
      source.onopen = () => {
        entry.openedMs = performance.now() - started;
        showSeven();
      };
      state.six.push(entry);
    }
    showSeven();
    setTimeout(showSeven, 3000);
  };
  run().catch((error) => ($("six-result").textContent = `failed: ${error.message || error}`));
}

function showSeven() {
  const open = state.six.filter((e) => e.openedMs !== null);
  const each = state.six
    .map((e, i) => `#${i + 1} ${e.openedMs === null ? "waiting" : e.openedMs.toFixed(0) + " ms"}`)
    .join(", ");
  $("six-result").textContent = `${open.length} of ${state.six.length} open: ${each}`;
  $("six-result").dataset.open = String(open.length);
}

function closeSeven() {
  for (const entry of state.six) entry.source.close();
  state.six = [];
  $("six-result").textContent = "";
}

async function dropConnection() {
  if (!state.session) return;
  const answer = await fetch("/demo/drop", {
    method: "POST",
    headers: authHeaders(state.session.token),
  });
  const body = await answer.json();
  $("drop-result").textContent = `the server dropped ${body.dropped} held connection(s); watch it recover`;
  $("drop-result").dataset.dropped = String(body.dropped);
}

async function burst() {
  const before = state.latencies.length;
  const started = performance.now();
  const pending = [];
  for (let i = 0; i < BURST; i++) {
    pending.push(sendText(`burst ${i + 1}`));
    if (pending.length >= 16) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  const sentMs = performance.now() - started;
  $("burst-result").textContent = `sent ${BURST} in ${sentMs.toFixed(0)} ms; waiting for them…`;
  const deadline = performance.now() + 30000;
  while (state.latencies.length - before < BURST && performance.now() < deadline) await sleep(100);
  const got = state.latencies.slice(before);
  const sorted = [...got].sort((a, b) => a - b);
  $("burst-result").textContent =
    `${got.length} of ${BURST} back; p50 ${fmt(percentile(sorted, 50))} ms, ` +
    `p99 ${fmt(percentile(sorted, 99))} ms, max ${fmt(sorted[sorted.length - 1] ?? null)} ms`;
  $("burst-result").dataset.received = String(got.length);
  drawHistogram(sorted);
}

function drawHistogram(sorted) {
  const canvas = $("histogram");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!sorted.length) return;
  const bins = 40;
  const top = sorted[sorted.length - 1] || 1;
  const counts = new Array(bins).fill(0);
  for (const value of sorted) counts[Math.min(bins - 1, Math.floor((value / top) * bins))] += 1;
  const most = Math.max(...counts);
  const width = canvas.width / bins;
  context.fillStyle = "#0072B2";
  counts.forEach((count, i) => {
    const height = (count / most) * (canvas.height - 20);
    context.fillRect(i * width + 1, canvas.height - 14 - height, width - 2, height);
  });
  context.fillStyle = "#333";
  context.font = "11px sans-serif";
  context.fillText("0 ms", 2, canvas.height - 2);
  context.fillText(`${fmt(top)} ms`, canvas.width - 60, canvas.height - 2);
}

// -- wiring ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  showProtocol();
  $("user").value = randomName();
  $("join").addEventListener("click", join);
  $("leave").addEventListener("click", leave);
  $("compose").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value;
    if (!text) return;
    $("text").value = "";
    sendText(text).catch((error) => setStatus(`send failed: ${error.message || error}`));
  });
  $("six").addEventListener("click", openSeven);
  $("six-close").addEventListener("click", closeSeven);
  $("drop").addEventListener("click", () => dropConnection().catch((e) => setStatus(String(e))));
  $("burst").addEventListener("click", () => burst().catch((e) => setStatus(String(e))));
});
