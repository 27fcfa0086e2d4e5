// weft console: polls the admin API (same origin, /api/) and shows the
// pipelines, an ask box and a dead-letter browser. No framework, no build.
//
// Every value shown comes from records (documents, questions, answers,
// dead letters) and is untrusted: it reaches the page only as text nodes
// (`textContent`, `append(string)`), never as markup, and attributes are
// set only from a fixed list. The server's Content-Security-Policy forbids
// inline script besides.
//
// URL parameters (for links and for headless tests, which cannot type):
//   ?ask=<question>[&pipeline=<tenant>/<name>]  ask this question on load
//   ?dlq=<tenant>/<name>                       show these dead letters on load
"use strict";

(function () {
  const TOKEN_KEY = "weft-admin-token";
  const POLL_MS = 2000;
  const params = new URLSearchParams(window.location.search);
  const $ = (id) => document.getElementById(id);

  // Attributes el() may set; never src, href or on* (values can be data).
  const ATTRS = new Set(["title", "value", "type", "colspan", "aria-label", "data-pipeline", "data-reads"]);

  /** An element with text children only (strings become text nodes). */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (ATTRS.has(k)) e.setAttribute(k, String(v));
      else throw new Error("el: attribute " + k + " is not allowed");
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function fmtRate(x) {
    if (typeof x !== "number") return "-";
    return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
  }
  function fmtNum(x) {
    return typeof x === "number" ? x.toLocaleString("en") : "-";
  }
  function fmtTime(ms) {
    if (typeof ms !== "number") return "-";
    const d = new Date(ms);
    return isNaN(d.getTime()) ? String(ms) : d.toISOString().replace("T", " ").replace("Z", "");
  }
  /** A `tenant/pipeline` path with each part percent-encoded. */
  function apiPath(id, suffix) {
    const [t, p] = id.split("/");
    return "/api/pipelines/" + encodeURIComponent(t) + "/" + encodeURIComponent(p) + (suffix || "");
  }

  /** One API call: `{status, data}` (data: the JSON body, or null). */
  async function api(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await r.json();
    } catch (_) {
      data = null;
    }
    if (r.status === 401) $("token-form").hidden = false;
    return { status: r.status, data };
  }

  function errorOf(res) {
    if (res.data && typeof res.data.error === "string") return res.data.error;
    return "HTTP " + res.status;
  }

  // ---- pipelines ------------------------------------------------------

  let pipelines = []; // the last status: every pipeline
  let firstStatus = true;

  function pipelineId(p) {
    return p.tenant + "/" + p.pipeline;
  }

  function actionButton(label, id, path) {
    const b = el("button", { class: "small", type: "button", "data-pipeline": id }, label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      const res = await api("POST", apiPath(id, path));
      if (res.status !== 200) window.alert(label + " " + id + ": " + errorOf(res));
      b.disabled = false;
      refresh();
    });
    return b;
  }

  function pipelineRow(p) {
    const id = pipelineId(p);
    const r = p.rates || {};
    const cond = String(p.condition || "running");
    const state = el("td", null, el("span", { class: "badge " + cond, title: p.state || "" }, cond));
    if (p.reason) state.append(el("div", { class: "error-text" }, p.reason));
    const lastError = p.last_error
      ? el(
          "td",
          { class: "error-text", title: fmtTime(p.last_error.at_ms) },
          (p.last_error.stage || "?") + " / " + (p.last_error.kind || "?") + ": " + (p.last_error.message || "")
        )
      : el("td", { class: "muted" }, "-");
    const held = cond === "paused";
    const actions = el(
      "td",
      { class: "actions" },
      held ? actionButton("resume", id, "/resume") : actionButton("pause", id, "/pause"),
      " ",
      (() => {
        const b = el("button", { class: "small", type: "button" }, "dead letters");
        b.addEventListener("click", () => {
          $("dlq-pipeline").value = id;
          loadDeadLetters();
        });
        return b;
      })()
    );
    const topics = p.topics || {};
    const route =
      (topics.source || "?") + " -> " + [topics.sink, topics.index && "index " + topics.index].filter(Boolean).join(" + ");
    return el(
      "tr",
      { "data-pipeline": id },
      el("td", null, el("strong", null, p.pipeline), el("div", { class: "muted mono" }, route)),
      state,
      el("td", { class: "num" }, fmtRate(r.consumed_per_sec)),
      el("td", { class: "num" }, fmtRate(r.produced_per_sec)),
      el("td", { class: "num" }, fmtRate(r.dead_letters_per_sec)),
      el("td", { class: "num", title: (p.lag_by_partition || []).map((x) => "p" + x[0] + ": " + x[1]).join(", ") }, p.lag === null || p.lag === undefined ? "-" : fmtNum(p.lag)),
      el("td", null, p.freshness || "-"),
      el("td", { class: "num" }, fmtNum(p.consumed)),
      el("td", { class: "num" }, fmtNum(p.produced)),
      el("td", { class: "num" }, fmtNum(p.dead_letters)),
      el("td", { class: "num" }, fmtNum(p.indexed_docs)),
      lastError,
      actions
    );
  }

  function renderTenants(data) {
    const out = [];
    for (const t of data.tenants || []) {
      const head = el(
        "tr",
        null,
        ...["pipeline", "status", "in/s", "out/s", "dead/s", "lag", "freshness (produced -> searchable)", "consumed", "produced", "dead letters", "indexed docs", "last error", ""].map((h) => el("th", null, h))
      );
      out.push(
        el("section", { class: "tenant" }, el("h3", null, "tenant " + t.tenant), el("table", null, el("thead", null, head), el("tbody", null, ...(t.pipelines || []).map(pipelineRow))))
      );
    }
    if (out.length === 0) out.push(el("p", { class: "muted" }, "No pipelines are running (yet)."));
    $("tenants").replaceChildren(...out);
    const refused = data.refused || [];
    $("refused").replaceChildren(
      ...(refused.length ? [el("h3", null, "Refused by the last reload"), el("ul", null, ...refused.map((x) => el("li", { class: "error-text" }, x)))] : [])
    );
  }

  /** Keeps a <select> listing `ids`, keeping the choice when it still exists. */
  function fillSelect(select, ids, none) {
    const keep = select.value;
    const same = select.options.length === ids.length && ids.every((id, i) => select.options[i].value === id);
    if (!same) {
      select.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
      if (ids.includes(keep)) select.value = keep;
    }
    select.disabled = ids.length === 0;
    if (ids.length === 0) select.replaceChildren(el("option", { value: "" }, none));
  }

  async function refresh() {
    let res;
    try {
      res = await api("GET", "/api/tenants");
    } catch (e) {
      $("conn").textContent = "admin API unreachable: " + e.message;
      $("conn").className = "conn bad";
      return;
    }
    if (res.status !== 200 || !res.data) {
      $("conn").textContent = "status: " + errorOf(res);
      $("conn").className = "conn bad";
      return;
    }
    $("conn").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    $("conn").className = "conn";
    renderTenants(res.data);
    pipelines = (res.data.tenants || []).flatMap((t) => t.pipelines || []);
    const askable = pipelines.filter((p) => p.topics && p.topics.format === "question" && p.topics.sink).map(pipelineId);
    fillSelect($("ask-pipeline"), askable, "no question pipeline");
    fillSelect($("dlq-pipeline"), pipelines.map(pipelineId), "no pipeline");
    if (firstStatus && pipelines.length > 0) {
      firstStatus = false;
      onFirstStatus(askable);
    }
  }

  async function poll() {
    await refresh();
    window.setTimeout(poll, POLL_MS);
  }

  // ---- ask ------------------------------------------------------------

  let asking = false;

  function setAskState(cls, text) {
    const s = $("ask-state");
    s.className = "state " + cls;
    s.textContent = text;
    document.body.dataset.ask = cls;
  }

  function hitTitle(h) {
    const m = (h && h.metadata) || {};
    return typeof m.title === "string" && m.title ? m.title : null;
  }

  function renderAnswer(pipeline, res) {
    const a = res.answer || {};
    const hits = Array.isArray(a.hits) ? a.hits : [];
    const cites = Array.isArray(a.citations) ? a.citations : [];
    const byChunk = new Map(hits.map((h) => [h.chunk_id, h]));
    const text = typeof a.answer === "string" ? a.answer : JSON.stringify(a);
    const parts = [
      el("p", { class: "answer-text", "aria-label": "answer" }, text),
      el("p", { class: "muted" }, "answered in " + fmtNum(res.latency_ms) + " ms by " + pipeline + " (question " + res.id + ")"),
      typeof res.pieces === "number"
        ? el("p", { class: "muted stream-stats", "data-reads": res.reads || 0 }, "streamed in " + res.pieces + " piece(s)" + (typeof res.first_piece_ms === "number" ? ", the first after " + fmtNum(res.first_piece_ms) + " ms" : " (the generator wrote it in one)"))
        : null,
      el("h3", null, "Citations (" + cites.length + ")"),
    ];
    if (cites.length === 0) parts.push(el("p", { class: "muted" }, "The answer cites nothing."));
    parts.push(
      el(
        "ol",
        { class: "citations" },
        ...cites.map((c) => {
          const h = byChunk.get(c.chunk_id);
          const title = hitTitle(h);
          return el(
            "li",
            { class: "citation" },
            el("strong", null, String(c.doc_id)),
            title ? " " + title : null,
            " ",
            el("span", { class: "muted mono" }, String(c.chunk_id) + (typeof c.score === "number" ? " score " + c.score.toFixed(3) : ""))
          );
        })
      )
    );
    parts.push(el("h3", null, "Documents behind them"));
    cites.forEach((c, i) => {
      const h = byChunk.get(c.chunk_id);
      const title = hitTitle(h);
      parts.push(
        el(
          "section",
          { class: "doc" },
          el("h4", null, "[" + (i + 1) + "] " + (title ? title + " (" + c.doc_id + ")" : String(c.doc_id))),
          el("div", { class: "muted mono" }, String(c.chunk_id)),
          h && typeof h.text === "string"
            ? el("p", { class: "doc-text" }, h.text)
            : el("p", { class: "muted" }, "(the answer record does not carry this chunk's text)")
        )
      );
    });
    const cited = new Set(cites.map((c) => c.chunk_id));
    const others = hits.filter((h) => !cited.has(h.chunk_id));
    if (others.length) {
      parts.push(
        el(
          "details",
          null,
          el("summary", null, "Retrieved but not cited (" + others.length + ")"),
          ...others.map((h) =>
            el(
              "section",
              { class: "doc" },
              el("h4", null, (hitTitle(h) ? hitTitle(h) + " (" + h.doc_id + ")" : String(h.doc_id)) + (typeof h.score === "number" ? " score " + h.score.toFixed(3) : "")),
              el("p", { class: "doc-text" }, String(h.text || ""))
            )
          )
        )
      );
    }
    $("answer").replaceChildren(el("article", { class: "answer" }, ...parts));
  }

  function authHeaders(json) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    if (json) headers["Content-Type"] = "application/json";
    return headers;
  }

  function showFailure(res) {
    if (res.status === 422 && res.data && res.data.dead_letter) {
      const d = res.data.dead_letter;
      setAskState("failed", "The question was dead-lettered by stage " + (d.stage || "?") + " (" + (d.kind || "?") + "): " + (d.message || ""));
    } else {
      setAskState("failed", "No answer: " + errorOf(res));
    }
  }

  /**
   * Asks with `?stream=1`: the answer is shown as its pieces arrive (one
   * JSON object per line; a piece numbered 0 starts a new stream, a
   * `reset` piece replaces the text so far), then whole with citations.
   */
  async function askStreamed(pipeline, text) {
    const live = el("p", { class: "answer-text streaming", "aria-label": "answer so far" });
    const stats = el("p", { class: "muted stream-stats" }, "Waiting for the first piece ...");
    $("answer").replaceChildren(el("article", { class: "answer" }, live, stats));
    const r = await fetch(apiPath(pipeline, "/ask") + "?stream=1", {
      method: "POST",
      headers: authHeaders(true),
      cache: "no-store",
      body: JSON.stringify({ text }),
    });
    if (r.status === 401) $("token-form").hidden = false;
    if (r.status !== 200 || !r.body) {
      let data = null;
      try {
        data = await r.json();
      } catch (_) {
        data = null;
      }
      return showFailure({ status: r.status, data });
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let shown = "";
    let pieces = 0;
    let firstMs = null;
    let reads = 0; // network reads that brought pieces: > 1 when it streamed
    let gotPiece = false;
    let end = null;
    const onEvent = (ev) => {
      if (ev.event !== "piece") {
        if (ev.event !== "asked") end = ev;
        return;
      }
      if (ev.seq === 0) {
        shown = "";
        pieces = 0;
      }
      if (ev.reset) shown = "";
      if (typeof ev.text === "string") shown += ev.text;
      pieces += 1;
      if (firstMs === null && !ev.final) firstMs = ev.ms;
      live.textContent = shown;
      stats.textContent = pieces + " piece(s)" + (firstMs === null ? "" : ", the first after " + fmtNum(firstMs) + " ms");
      gotPiece = true;
      setAskState("streaming", "The answer of " + pipeline + " is being written ...");
    };
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      gotPiece = false;
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (!line.trim()) continue;
        try {
          onEvent(JSON.parse(line));
        } catch (_) {
          // not a JSON line: ignored
        }
      }
      if (gotPiece) reads += 1;
    }
    if (end && end.event === "answer") {
      setAskState("answered", "Answered.");
      renderAnswer(pipeline, Object.assign({ reads }, end));
    } else if (end && end.event === "dead-letter") {
      showFailure({ status: 422, data: end });
    } else {
      setAskState("failed", "No answer: " + ((end && end.error) || "the stream ended without one"));
    }
  }

  async function ask(pipeline, text) {
    if (asking) return;
    asking = true;
    $("ask-button").disabled = true;
    $("answer").replaceChildren();
    const t0 = performance.now();
    const p = pipelines.find((x) => pipelineId(x) === pipeline);
    const streams = !!(p && p.topics && p.topics.deltas);
    const pending = () =>
      setAskState("pending", "Waiting for the answer of " + pipeline + " ... " + ((performance.now() - t0) / 1000).toFixed(1) + " s");
    pending();
    const timer = window.setInterval(() => {
      if (document.body.dataset.ask === "pending") pending();
    }, 200);
    try {
      if (streams) {
        await askStreamed(pipeline, text);
      } else {
        // No generator, no answer stream: the answer shows whole.
        const res = await api("POST", apiPath(pipeline, "/ask"), { text });
        if (res.status === 200 && res.data) {
          setAskState("answered", "Answered.");
          renderAnswer(pipeline, res.data);
        } else {
          showFailure(res);
        }
      }
    } catch (e) {
      setAskState("failed", "No answer: " + e.message);
    } finally {
      window.clearInterval(timer);
      asking = false;
      $("ask-button").disabled = false;
    }
  }

  // ---- dead letters ---------------------------------------------------

  function headerList(headers) {
    const dl = el("dl", { class: "headers" });
    for (const h of headers || []) dl.append(el("dt", { class: "mono" }, String(h[0])), el("dd", { class: "mono" }, String(h[1])));
    return dl;
  }

  async function loadDeadLetters() {
    const id = $("dlq-pipeline").value;
    if (!id) return;
    const n = Math.max(1, Math.min(1000, parseInt($("dlq-n").value, 10) || 20));
    const box = $("dead-letters");
    box.replaceChildren(el("p", { class: "state pending" }, "Reading the dead letters of " + id + " ..."));
    const res = await api("GET", apiPath(id, "/dead-letters?n=" + n));
    if (res.status !== 200 || !res.data) {
      box.replaceChildren(el("p", { class: "state failed" }, errorOf(res)));
      return;
    }
    const list = res.data.dead_letters || [];
    document.body.dataset.dlq = id;
    if (list.length === 0) {
      box.replaceChildren(el("p", { class: "muted" }, "No dead letters on " + res.data.topic + "."));
      return;
    }
    const rows = list
      .slice()
      .reverse()
      .map((d) =>
        el(
          "tr",
          { class: "dead-letter" },
          el("td", { class: "mono" }, d.partition + ":" + d.offset, el("div", { class: "muted" }, fmtTime(d.timestamp))),
          el("td", null, el("div", null, (d.stage || "?") + " / " + (d.kind || "?")), el("div", { class: "error-text" }, d.message || "")),
          el("td", { class: "mono" }, d.key === null || d.key === undefined ? "(no key)" : d.key),
          el(
            "td",
            null,
            el("pre", { class: "value" }, d.value === null || d.value === undefined ? "(no value)" : d.value),
            el("div", { class: "muted" }, fmtNum(d.value_bytes) + " bytes"),
            el("details", null, el("summary", null, "headers (" + (d.headers || []).length + ")"), headerList(d.headers))
          )
        )
      );
    box.replaceChildren(
      el("p", { class: "muted" }, list.length + " newest of " + res.data.topic + ", newest first"),
      el("table", null, el("thead", null, el("tr", null, ...["at", "why", "key", "value"].map((h) => el("th", null, h)))), el("tbody", null, ...rows))
    );
  }

  // ---- start ----------------------------------------------------------

  function onFirstStatus(askable) {
    const q = params.get("ask");
    if (q) {
      const want = params.get("pipeline");
      const pipeline = want && askable.includes(want) ? want : askable[0];
      $("ask-text").value = q;
      if (pipeline) {
        $("ask-pipeline").value = pipeline;
        ask(pipeline, q);
      } else {
        setAskState("failed", "No question pipeline runs here to ask.");
      }
    }
    const dlq = params.get("dlq");
    if (dlq && pipelines.some((p) => pipelineId(p) === dlq)) {
      $("dlq-pipeline").value = dlq;
      loadDeadLetters();
    }
  }

  function start() {
    $("ask-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("ask-text").value.trim();
      const pipeline = $("ask-pipeline").value;
      if (text && pipeline) ask(pipeline, text);
    });
    $("dlq-form").addEventListener("submit", (e) => {
      e.preventDefault();
      loadDeadLetters();
    });
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      $("token-form").hidden = true;
      refresh();
    });
    poll();
  }

  start();
})();
