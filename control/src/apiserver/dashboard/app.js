"use strict";
// wasmkube's dashboard: lists and watches objects through the Kubernetes API with the logged-in user's token
// (so RBAC decides what it shows and may do) and draws them, updating rows in place as watch events come.
// Everything from the cluster is put on the page as text, never as markup.

const $ = (id) => document.getElementById(id);
const VIEWS = ["nodes", "deployments", "services", "pods", "events"];
/** The most Events the Events view shows: the newest. */
const EVENT_ROWS = 500;
const METRICS_PERIOD_MS = 5000;
const LOG_LIMIT = 200000;

const state = {
  token: sessionStorage.getItem("wasmkube.token"),
  namespace: "",
  filter: "",
  view: "pods",
  informers: {},
  metrics: { nodes: new Map(), pods: new Map(), requests: new Map() },
  metricsTimer: null,
  selected: null,
  details: null,
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class Gone extends Error {}

function headers(extra = {}) {
  return { Authorization: `Bearer ${state.token}`, Accept: "application/json", ...extra };
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const status = await response.json();
    if (status && status.message) message = status.message;
  } catch (_) {
    // Not a Status: the HTTP status line says it.
  }
  return new ApiError(response.status, message);
}

/** A request to the API as the logged-in user; the decoded JSON answer, or an ApiError. */
async function api(path, { method = "GET", body, contentType = "application/json", signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": contentType }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (response.status === 401) {
    loggedOut("Your session has ended: log in again.");
    throw new ApiError(401, "Unauthorized");
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

const keyOf = (o) => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);

/** The objects at a list path, kept current by a watch from the list's resourceVersion (relisting on 410). */
class Informer {
  constructor(path) {
    this.path = path;
    this.items = new Map();
    this.error = "";
    this.synced = false;
    this.abort = new AbortController();
    this.run();
  }

  stop() {
    this.abort.abort();
  }

  async run() {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        const list = await api(this.path, { signal });
        this.items = new Map(list.items.map((o) => [keyOf(o), o]));
        this.error = "";
        this.synced = true;
        changed();
        let version = list.metadata.resourceVersion;
        for (;;) version = await this.watch(version, signal);
      } catch (error) {
        if (signal.aborted || error.status === 401) return;
        if (!(error instanceof Gone)) {
          this.error = error.message;
          changed();
          await sleep(error.status === 403 ? 15000 : 1000, signal);
        }
      }
    }
  }

  /** Follows one watch to its end; the last resourceVersion seen. */
  async watch(version, signal) {
    const join = this.path.includes("?") ? "&" : "?";
    const url = `${this.path}${join}watch=1&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion=${encodeURIComponent(version)}`;
    const response = await fetch(url, { headers: headers(), signal });
    if (response.status === 410) throw new Gone();
    if (!response.ok) throw await failure(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return version;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.type === "ERROR") {
          if (event.object.code === 410) throw new Gone();
          throw new ApiError(event.object.code, event.object.message);
        }
        version = event.object.metadata.resourceVersion;
        if (event.type === "DELETED") this.items.delete(keyOf(event.object));
        else if (event.type !== "BOOKMARK") this.items.set(keyOf(event.object), event.object);
        changed();
      }
    }
  }
}

// ---- Quantities, times and statuses, as kubectl shows them ----

const SUFFIXES = {
  n: 1e-9, u: 1e-6, m: 1e-3, "": 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity ("250m", "128Mi", "1e3") as a number; NaN when it is none. */
function quantity(text) {
  const match = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$/.exec(String(text ?? ""));
  if (!match || !(match[2] in SUFFIXES)) return NaN;
  return Number(match[1]) * SUFFIXES[match[2]];
}

function cpuText(cores) {
  return Number.isFinite(cores) ? `${Math.round(cores * 1000)}m` : "–";
}

function bytesText(bytes) {
  if (!Number.isFinite(bytes)) return "–";
  const units = ["B", "Ki", "Mi", "Gi", "Ti"];
  let unit = 0;
  while (bytes >= 1024 && unit < units.length - 1) {
    bytes /= 1024;
    unit += 1;
  }
  return `${bytes >= 10 || unit === 0 ? Math.round(bytes) : bytes.toFixed(1)}${units[unit]}`;
}

function age(timestamp) {
  if (!timestamp) return "";
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

/** The STATUS column of `kubectl get pods`. */
function podStatus(pod) {
  const status = pod.status || {};
  let reason = status.reason || status.phase || "Unknown";
  let initializing = false;
  const inits = status.initContainerStatuses || [];
  const initCount = (pod.spec.initContainers || []).length;
  for (let i = 0; i < inits.length; i++) {
    const { terminated, waiting } = inits[i].state || {};
    if (terminated && terminated.exitCode === 0) continue;
    initializing = true;
    if (terminated) reason = terminated.reason ? `Init:${terminated.reason}` : `Init:ExitCode:${terminated.exitCode}`;
    else if (waiting && waiting.reason && waiting.reason !== "PodInitializing") reason = `Init:${waiting.reason}`;
    else reason = `Init:${i}/${initCount}`;
    break;
  }
  if (!initializing) {
    let running = false;
    for (const container of [...(status.containerStatuses || [])].reverse()) {
      const { running: up, terminated, waiting } = container.state || {};
      if (waiting && waiting.reason) reason = waiting.reason;
      else if (terminated) reason = terminated.reason || `ExitCode:${terminated.exitCode}`;
      else if (up && container.ready) running = true;
    }
    if (reason === "Completed" && running) reason = "Running";
  }
  if (pod.metadata.deletionTimestamp) reason = status.reason === "NodeLost" ? "Unknown" : "Terminating";
  return reason;
}

function statusClass(text) {
  if (["Running", "Completed", "Succeeded", "Ready", "Complete"].includes(text)) return "ok";
  if (/^(Pending|ContainerCreating|PodInitializing|Terminating|Init:\d|Progressing|Scaling)/.test(text)) return "warn";
  return "bad";
}

function readyCount(pod) {
  const statuses = pod.status?.containerStatuses || [];
  return `${statuses.filter((c) => c.ready).length}/${pod.spec.containers.length}`;
}

function restarts(pod) {
  return (pod.status?.containerStatuses || []).reduce((sum, c) => sum + (c.restartCount || 0), 0);
}

function podMetrics(pod) {
  const metrics = state.metrics.pods.get(keyOf(pod));
  if (!metrics) return { cpu: NaN, memory: NaN };
  return metrics.containers.reduce(
    (sum, c) => ({ cpu: sum.cpu + quantity(c.usage.cpu), memory: sum.memory + quantity(c.usage.memory) }),
    { cpu: 0, memory: 0 },
  );
}

// ---- Drawing ----

/** An element with attributes (`on*` ones are listeners) and children (strings become text). */
function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.filter((c) => c !== undefined && c !== null));
  return element;
}

/** Sets an element's text only when it changed (a watch event redraws every row). */
function setText(element, text) {
  const value = String(text);
  if (element.textContent !== value) element.textContent = value;
}

/**
 * Keeps a container's children (a table body's rows, the node cards) those of `items`, in order: a child is made
 * once per key by `make` and brought up to date by `update`, so focus and a half-typed input survive redraws.
 */
function syncRows(body, items, make, update) {
  const existing = new Map([...body.children].map((row) => [row.dataset.key, row]));
  const rows = items.map(([key, item]) => {
    const row = existing.get(key) || make(key, item);
    row.dataset.key = key;
    existing.delete(key);
    update(row, item);
    return row;
  });
  for (const row of existing.values()) row.remove();
  rows.forEach((row, index) => {
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
}

function cells(row) {
  return row.querySelectorAll(":scope > td");
}

function visible(informer) {
  if (!informer) return [];
  const filter = state.filter.toLowerCase();
  return [...informer.items.entries()]
    .filter(([key]) => !filter || key.toLowerCase().includes(filter))
    .sort(([a], [b]) => a.localeCompare(b));
}

function showError(view, informers) {
  const message = informers.map((i) => i && i.error).filter(Boolean)[0] || "";
  setText(document.querySelector(`#view-${view} [data-error]`), message);
}

function drawNodes() {
  const nodes = state.informers.nodes;
  showError("nodes", [nodes]);
  const placedOn = new Map();
  for (const pod of state.informers.pods?.items.values() || []) {
    if (!pod.spec.nodeName) continue;
    if (!placedOn.has(pod.spec.nodeName)) placedOn.set(pod.spec.nodeName, []);
    placedOn.get(pod.spec.nodeName).push(pod);
  }
  // A card's summary and its pods are drawn again only when what they show changed, so a focused pod keeps its
  // focus while the node's CPU and memory move.
  const make = (name) => el("article", { class: "card", "data-node": name }, el("div"), el("div", { class: "chips" }));
  syncRows($("nodes"), visible(nodes), make, (card, node) => {
    const name = node.metadata.name;
    const ready = (node.status?.conditions || []).find((c) => c.type === "Ready");
    const readyText = ready?.status === "True" ? "Ready" : "NotReady";
    const allocatable = node.status?.allocatable || {};
    const usage = state.metrics.nodes.get(name)?.usage || {};
    const placed = (placedOn.get(name) || []).sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
    const statuses = placed.map((pod) => [keyOf(pod), podStatus(pod)]);
    const cpu = quantity(usage.cpu);
    const memory = quantity(usage.memory);
    const [summary, chips] = card.children;
    const pods = JSON.stringify(statuses);
    if (chips.dataset.shown !== pods) {
      chips.dataset.shown = pods;
      chips.replaceChildren(...statuses.map(([key, status]) => el("button", {
        type: "button", class: `chip ${statusClass(status)}`, title: `${key}: ${status}`, "data-pod": key,
        onclick: () => select(key),
      }, key.split("/")[1])));
    }
    const shown = JSON.stringify([readyText, node.spec?.unschedulable, allocatable, cpu, memory, placed.length]);
    if (summary.dataset.shown === shown) return;
    summary.dataset.shown = shown;
    const meter = (label, used, total, text) => {
      const share = Math.min(1, used / total || 0);
      // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
      const fill = el("span");
      fill.style.width = `${(share * 100).toFixed(1)}%`;
      return [
        el("div", {}, `${label} `, el("span", { class: "muted" }, text)),
        el("div", { class: "meter", role: "meter", "aria-label": `${label} of ${name}`, "aria-valuemin": 0,
                    "aria-valuemax": 100, "aria-valuenow": Math.round(share * 100) }, fill),
      ];
    };
    summary.replaceChildren(
      el("h2", {}, name, el("span", { class: statusClass(readyText) }, node.spec?.unschedulable ? `${readyText}, cordoned` : readyText)),
      ...meter("CPU", cpu, quantity(allocatable.cpu), `${cpuText(cpu)} of ${cpuText(quantity(allocatable.cpu))}`),
      ...meter("Memory", memory, quantity(allocatable.memory), `${bytesText(memory)} of ${bytesText(quantity(allocatable.memory))}`),
      ...meter("Pods", placed.length, quantity(allocatable.pods), `${placed.length} of ${allocatable.pods ?? "?"}`));
  });
}

function rolloutText(deployment) {
  const spec = deployment.spec || {};
  const status = deployment.status || {};
  if (spec.paused) return "Paused";
  if ((status.observedGeneration || 0) < (deployment.metadata.generation || 0)) return "Progressing";
  const progressing = (status.conditions || []).find((c) => c.type === "Progressing");
  if (progressing?.reason === "ProgressDeadlineExceeded") return "ProgressDeadlineExceeded";
  const desired = spec.replicas ?? 1;
  const done = (status.updatedReplicas || 0) === desired && (status.replicas || 0) === desired
    && (status.availableReplicas || 0) === desired;
  return done ? "Complete" : "Progressing";
}

function drawDeployments() {
  const deployments = state.informers.deployments;
  showError("deployments", [deployments]);
  syncRows($("deployments"), visible(deployments), (key) => {
    const input = el("input", { type: "number", min: 0, "aria-label": `Replicas of ${key}`, "data-scale": key });
    input.addEventListener("keydown", (event) => { if (event.key === "Enter") scale(key, input); });
    return el("tr", { "data-deployment": key },
      el("td"), el("td"), el("td", { class: "num" }),
      el("td", {}, el("progress", { class: "progress", max: 1, value: 0 }), " ", el("span")),
      el("td", {}, input, " ",
        el("button", { type: "button", "data-action": "scale", onclick: () => scale(key, input) }, "Scale")),
      el("td", {}, el("button", { type: "button", "data-action": "restart", onclick: () => restart(key) }, "Restart")));
  }, (row, deployment) => {
    const [name, namespace, ready, rollout, scaleCell] = cells(row);
    const desired = deployment.spec?.replicas ?? 1;
    const status = deployment.status || {};
    setText(name, deployment.metadata.name);
    setText(namespace, deployment.metadata.namespace);
    setText(ready, `${status.readyReplicas || 0}/${desired}`);
    const [bar, text] = [rollout.querySelector("progress"), rollout.querySelector("span")];
    bar.max = Math.max(1, desired);
    bar.value = Math.min(status.updatedReplicas || 0, status.availableReplicas || 0);
    const phase = rolloutText(deployment);
    setText(text, `${phase}: ${status.updatedReplicas || 0} updated, ${status.availableReplicas || 0} available`);
    text.className = statusClass(phase);
    row.dataset.rollout = phase;
    const input = scaleCell.querySelector("input");
    if (document.activeElement !== input && input.dataset.shown !== String(desired)) {
      input.value = desired;
      input.dataset.shown = desired;
    }
  });
}

function drawServices() {
  const services = state.informers.services;
  const slices = state.informers.endpointslices;
  showError("services", [services, slices]);
  const ready = new Map();
  const rates = new Map();
  for (const slice of slices?.items.values() || []) {
    const service = slice.metadata.labels?.["kubernetes.io/service-name"];
    if (!service) continue;
    const key = `${slice.metadata.namespace}/${service}`;
    const serving = (slice.endpoints || []).filter((e) => e.conditions?.ready !== false);
    ready.set(key, (ready.get(key) || 0) + serving.length);
    for (const endpoint of serving) {
      const rate = state.metrics.requests.get(`${slice.metadata.namespace}/${endpoint.targetRef?.name}`);
      if (rate !== undefined) rates.set(key, (rates.get(key) || 0) + rate);
    }
  }
  syncRows($("services"), visible(services), (key) => el("tr", { "data-service": key },
    el("td"), el("td"), el("td"), el("td"), el("td"), el("td", { class: "num" }), el("td", { class: "num" })),
  (row, service) => {
    const [name, namespace, type, ip, ports, endpoints, requests] = cells(row);
    const key = keyOf(service);
    setText(name, service.metadata.name);
    setText(namespace, service.metadata.namespace);
    setText(type, service.spec?.type || "ClusterIP");
    setText(ip, service.spec?.clusterIP || "");
    setText(ports, (service.spec?.ports || [])
      .map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol || "TCP"}`).join(", "));
    setText(endpoints, ready.get(key) || 0);
    const rate = rates.get(key);
    setText(requests, rate === undefined ? "–" : rate.toFixed(1));
  });
}

function drawPods() {
  const pods = state.informers.pods;
  showError("pods", [pods]);
  syncRows($("pods"), visible(pods), (key) => el("tr", { "data-pod": key, tabindex: 0,
    onclick: (event) => { if (event.target.tagName !== "BUTTON") select(key); },
    onkeydown: (event) => { if (event.key === "Enter" && event.target.tagName === "TR") select(key); } },
  el("td"), el("td"), el("td", { class: "num" }), el("td"), el("td", { class: "num" }), el("td"),
  el("td", { class: "num" }), el("td", { class: "num" }), el("td", { class: "num" }),
  el("td", {}, el("button", { type: "button", "data-action": "delete", onclick: () => deletePod(key) }, "Delete"))),
  (row, pod) => {
    const [name, namespace, ready, status, restartCount, node, cpu, memory, created] = cells(row);
    const phase = podStatus(pod);
    const usage = podMetrics(pod);
    setText(name, pod.metadata.name);
    setText(namespace, pod.metadata.namespace);
    setText(ready, readyCount(pod));
    setText(status, phase);
    status.className = statusClass(phase);
    row.dataset.status = phase;
    setText(restartCount, restarts(pod));
    setText(node, pod.spec.nodeName || "");
    setText(cpu, cpuText(usage.cpu));
    setText(memory, bytesText(usage.memory));
    setText(created, age(pod.metadata.creationTimestamp));
    if (state.selected === keyOf(pod)) row.dataset.selected = "";
    else delete row.dataset.selected;
  });
}

/** When an Event last happened: its series' last time, its last timestamp, or when it was made. */
function lastSeen(event) {
  return event.series?.lastObservedTime || event.lastTimestamp || event.eventTime || event.metadata.creationTimestamp || "";
}

function drawEvents() {
  const events = state.informers.events;
  showError("events", [events]);
  const filter = state.filter.toLowerCase();
  const shown = [...(events?.items.entries() || [])]
    .filter(([, e]) => !filter || [e.involvedObject.name, e.reason, e.message]
      .some((text) => (text || "").toLowerCase().includes(filter)))
    .sort(([, a], [, b]) => lastSeen(b).localeCompare(lastSeen(a))
      || Number(b.metadata.resourceVersion) - Number(a.metadata.resourceVersion))
    .slice(0, EVENT_ROWS);
  syncRows($("events"), shown, (key) => el("tr", { "data-event": key },
    el("td", { class: "num" }), el("td"), el("td"), el("td"), el("td"), el("td")),
  (row, event) => {
    const [seen, namespace, type, reason, object, message] = cells(row);
    const count = event.series?.count || event.count || 1;
    setText(seen, `${age(lastSeen(event))}${count > 1 ? ` (x${count})` : ""}`);
    setText(namespace, event.metadata.namespace || "");
    setText(type, event.type || "");
    type.className = event.type === "Warning" ? "bad" : "muted";
    setText(reason, event.reason || "");
    setText(object, `${event.involvedObject.kind || ""}/${event.involvedObject.name || ""}`);
    setText(message, event.message || "");
    row.dataset.reason = event.reason || "";
  });
}

function drawDetails() {
  if (!state.selected) return;
  const pod = state.informers.pods?.items.get(state.selected);
  setText($("pod-title"), state.selected);
  const facts = pod ? [
    ["Status", podStatus(pod)], ["Node", pod.spec.nodeName || "–"], ["Pod IP", pod.status?.podIP || "–"],
    ["QoS", pod.status?.qosClass || "–"], ["Created", pod.metadata.creationTimestamp || ""],
    ["Containers", pod.spec.containers.map((c) => `${c.name} (${c.image})`).join(", ")],
    ["Conditions", (pod.status?.conditions || []).map((c) => `${c.type}=${c.status}`).join(", ")],
  ] : [["Status", "deleted"]];
  $("pod-facts").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  const events = [...(state.details?.events.items.values() || [])]
    .sort((a, b) => (a.lastTimestamp || a.eventTime || "").localeCompare(b.lastTimestamp || b.eventTime || ""));
  $("pod-events").replaceChildren(...events.map((event) => el("tr", {},
    el("td", { class: event.type === "Warning" ? "bad" : "muted" }, event.reason || ""),
    el("td", { class: "num" }, `${age(event.lastTimestamp || event.eventTime)}${event.count > 1 ? ` (x${event.count})` : ""}`),
    el("td", {}, event.message || ""))));
  const chooser = $("log-container");
  const names = pod ? pod.spec.containers.map((c) => c.name) : [];
  if ([...chooser.options].map((o) => o.value).join() !== names.join()) {
    chooser.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  }
}

let drawQueued = false;

/** Something the page shows changed: draw once the current burst of watch events is read. */
function changed() {
  if (drawQueued) return;
  drawQueued = true;
  setTimeout(() => {
    drawQueued = false;
    draw();
  }, 30);
}

function draw() {
  if (!state.token) return;
  ({ nodes: drawNodes, deployments: drawDeployments, services: drawServices, pods: drawPods, events: drawEvents })[state.view]();
  drawDetails();
}

// ---- Actions: each asks first, then writes as the logged-in user ----

function notice(text) {
  setText($("notice"), text);
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => setText($("notice"), ""), 6000);
}

function confirmed(question) {
  const dialog = $("confirm");
  setText($("confirm-text"), question);
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-ok").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function objectPath(group, resource, key) {
  const [namespace, name] = key.split("/");
  const base = group ? `/apis/${group}` : "/api/v1";
  return `${base}/namespaces/${encodeURIComponent(namespace)}/${resource}/${encodeURIComponent(name)}`;
}

async function act(question, done, write) {
  if (!(await confirmed(question))) return;
  try {
    await write();
    notice(done);
  } catch (error) {
    if (error.status !== 401) notice(`Not done: ${error.message}`);
  }
}

function scale(key, input) {
  const replicas = Number(input.value);
  if (!Number.isInteger(replicas) || replicas < 0) {
    notice("Replicas must be a whole number, 0 or more.");
    return;
  }
  const current = state.informers.deployments?.items.get(key)?.spec?.replicas ?? 1;
  act(`Scale Deployment ${key} from ${current} to ${replicas} replicas?`, `Deployment ${key} scaled to ${replicas}.`,
    () => api(`${objectPath("apps/v1", "deployments", key)}/scale`, {
      method: "PATCH", contentType: "application/merge-patch+json", body: { spec: { replicas } },
    }));
}

function restart(key) {
  act(`Restart every pod of Deployment ${key}, one rollout step at a time?`, `Deployment ${key} is restarting.`,
    () => api(objectPath("apps/v1", "deployments", key), {
      method: "PATCH", contentType: "application/merge-patch+json",
      body: { spec: { template: { metadata: { annotations: {
        "kubectl.kubernetes.io/restartedAt": new Date().toISOString() } } } } },
    }));
}

function deletePod(key) {
  act(`Delete pod ${key}?`, `Pod ${key} is being deleted.`,
    () => api(objectPath("", "pods", key), { method: "DELETE" }));
}

// ---- A pod's details: its events and a live tail of its log ----

async function followLog(key, container, signal) {
  const pre = $("pod-log");
  pre.textContent = "";
  const url = `${objectPath("", "pods", key)}/log?follow=true&tailLines=200&container=${encodeURIComponent(container)}`;
  while (!signal.aborted) {
    try {
      const response = await fetch(url, { headers: headers(), signal });
      if (!response.ok) throw await failure(response);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      pre.textContent = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = (pre.textContent + value).slice(-LOG_LIMIT);
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
    } catch (error) {
      if (signal.aborted) return;
      pre.textContent = `(no log yet: ${error.message})`;
    }
    await sleep(2000, signal);
  }
}

function closeDetails() {
  if (state.details) {
    state.details.events.stop();
    state.details.log.abort();
  }
  state.details = null;
  state.selected = null;
  $("pod-details").hidden = true;
  changed();
}

function select(key) {
  closeDetails();
  const [namespace, name] = key.split("/");
  const selector = encodeURIComponent(`involvedObject.name=${name},involvedObject.kind=Pod`);
  state.selected = key;
  state.details = {
    events: new Informer(`/api/v1/namespaces/${encodeURIComponent(namespace)}/events?fieldSelector=${selector}`),
    log: new AbortController(),
  };
  $("pod-details").hidden = false;
  drawDetails();
  const first = state.informers.pods?.items.get(key)?.spec.containers[0]?.name;
  if (first) followLog(key, first, state.details.log.signal);
  $("close-details").focus();
  changed();
}

// ---- Watches, metrics, views ----

function listPath(group, resource) {
  const base = group ? `/apis/${group}` : "/api/v1";
  return state.namespace ? `${base}/namespaces/${encodeURIComponent(state.namespace)}/${resource}` : `${base}/${resource}`;
}

/** The list paths of what the views show: pods always, the rest while their view is shown. */
const SOURCES = {
  pods: () => listPath("", "pods"),
  nodes: () => "/api/v1/nodes",
  deployments: () => listPath("apps/v1", "deployments"),
  services: () => listPath("", "services"),
  endpointslices: () => listPath("discovery.k8s.io/v1", "endpointslices"),
  events: () => listPath("", "events"),
};

function watchedIn(view) {
  return ["pods", ...({ nodes: ["nodes"], services: ["services", "endpointslices"] }[view] || [view])];
}

/**
 * Watches what a view shows and stops the other watches: over HTTP/1.1 (a server without TLS) a browser opens
 * at most six connections to it, and each watch holds one.
 */
function watchFor(view) {
  const wanted = watchedIn(view).filter((kind) => kind in SOURCES);
  for (const [kind, informer] of Object.entries(state.informers)) {
    if (!wanted.includes(kind)) {
      informer.stop();
      delete state.informers[kind];
    }
  }
  for (const kind of wanted) {
    if (!state.informers[kind]) state.informers[kind] = new Informer(SOURCES[kind]());
  }
}

function stopWatching() {
  for (const informer of Object.values(state.informers)) informer.stop();
  state.informers = {};
  clearInterval(state.metricsTimer);
  closeDetails();
}

async function readMetrics() {
  const read = async (path, into) => {
    try {
      const list = await api(path);
      into.clear();
      for (const item of list.items) into.set(keyOf(item), item);
    } catch (_) {
      into.clear();
    }
  };
  await Promise.all([
    read("/apis/metrics.k8s.io/v1beta1/nodes", state.metrics.nodes),
    read(listPath("metrics.k8s.io/v1beta1", "pods"), state.metrics.pods),
    state.view === "services" ? readRequestRates() : null,
  ]);
  changed();
}

/** Each pod's HTTP requests per second (custom.metrics.k8s.io), in the namespaces of the Services shown. */
async function readRequestRates() {
  const services = [...(state.informers.services?.items.values() || [])];
  const namespaces = new Set(services.map((service) => service.metadata.namespace));
  const rates = new Map();
  await Promise.all([...namespaces].map(async (namespace) => {
    try {
      const list = await api(`/apis/custom.metrics.k8s.io/v1beta2/namespaces/${encodeURIComponent(namespace)}/pods/*/http_requests_per_second`);
      for (const item of list.items) rates.set(`${namespace}/${item.describedObject.name}`, quantity(item.value));
    } catch (_) {
      // No rates for what may not be read.
    }
  }));
  state.metrics.requests = rates;
}

/** The namespaces to choose from, read when the namespace field is used (nothing if they may not be listed). */
async function readNamespaces() {
  try {
    const list = await api("/api/v1/namespaces");
    const names = list.items.map((n) => n.metadata.name).sort();
    $("namespaces").replaceChildren(...names.map((name) => el("option", { value: name })));
  } catch (_) {
    // A user who may not list namespaces types one.
  }
}

function watchAll() {
  stopWatching();
  watchFor(state.view);
  readMetrics();
  state.metricsTimer = setInterval(readMetrics, METRICS_PERIOD_MS);
}

function show(view) {
  if (!VIEWS.includes(view)) view = "pods";
  state.view = view;
  if (view !== "pods" && view !== "nodes") closeDetails();
  watchFor(view);
  if (view === "services") readMetrics();
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const button of document.querySelectorAll("#nav button")) {
    if (button.dataset.view === view) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  if (location.hash !== `#/${view}`) history.replaceState(null, "", `#/${view}`);
  draw();
}

// ---- Logging in and out ----

function loggedOut(message) {
  stopWatching();
  state.token = null;
  sessionStorage.removeItem("wasmkube.token");
  $("nav").hidden = true;
  $("session").hidden = true;
  for (const name of VIEWS) $(`view-${name}`).hidden = true;
  $("login").hidden = false;
  setText($("login-error"), message || "");
  $("token").focus();
}

async function loggedIn(token) {
  state.token = token;
  const review = await api("/apis/authentication.k8s.io/v1/selfsubjectreviews", {
    method: "POST",
    body: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" },
  });
  sessionStorage.setItem("wasmkube.token", token);
  setText($("whoami"), review.status?.userInfo?.username || "");
  $("login").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  watchAll();
  show(location.hash.replace(/^#\//, ""));
}

async function exchange(code) {
  const response = await fetch("/ui/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code }),
  });
  if (!response.ok) {
    throw new ApiError(response.status, "This login link was used already or has expired: run `wasmkube dashboard` for a new one.");
  }
  return (await response.json()).token;
}

async function start() {
  const code = new URLSearchParams(location.hash.slice(1)).get("code");
  if (code) history.replaceState(null, "", location.pathname);
  try {
    if (code) await loggedIn(await exchange(code));
    else if (state.token) await loggedIn(state.token);
    else loggedOut();
  } catch (error) {
    if (error.status !== 401 || code) loggedOut(error.message);
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  try {
    await loggedIn(token);
  } catch (error) {
    loggedOut(error.status === 401 ? "The token was not accepted." : error.message);
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api("/ui/session", { method: "DELETE" });
  } catch (_) {
    // Logged out on this page either way.
  }
  loggedOut("Logged out.");
});

$("namespace").addEventListener("focus", readNamespaces);

$("namespace").addEventListener("change", (event) => {
  state.namespace = event.target.value.trim();
  watchAll();
});

$("filter").addEventListener("input", (event) => {
  state.filter = event.target.value;
  draw();
});

$("nav").addEventListener("click", (event) => {
  const view = event.target.closest("button")?.dataset.view;
  if (view) show(view);
});

$("close-details").addEventListener("click", closeDetails);

$("log-container").addEventListener("change", (event) => {
  if (!state.details) return;
  state.details.log.abort();
  state.details.log = new AbortController();
  followLog(state.selected, event.target.value, state.details.log.signal);
});

window.addEventListener("hashchange", () => {
  if (state.token) show(location.hash.replace(/^#\//, ""));
});

document.addEventListener("keydown", (event) => {
  if (!state.token || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Escape" && state.selected) {
    closeDetails();
    return;
  }
  if (event.target.closest("input, select, textarea, dialog")) return;
  const view = VIEWS[Number(event.key) - 1];
  if (view) show(view);
  else if (event.key === "/") {
    event.preventDefault();
    $("filter").focus();
  } else if (event.key === "n") {
    event.preventDefault();
    $("namespace").focus();
  }
});

setInterval(changed, 10000);
start();
