#!/usr/bin/env python3
"""An offline *approximation* of the MiniLM + hybrid query pipeline, to
choose retriever settings on data/airline/questions-dev.jsonl when the weft
host cannot be built or run (it was written for that: a saturated 2-core
machine). It is not weft's measurement; `scripts/tune-semantic-hybrid.py`
runs the real pipeline with `weft eval` and is what the README's figures
must come from.

What it re-implements, from the code it names:
- vectors: all-MiniLM-L6-v2 in numpy (scripts/minilm-reference.py's
  tokenizer and encoder, float32, erf by Abramowitz-Stegun 7.1.26, error
  < 1.5e-7), mean pooling, L2 norm; the question and each document's text
  (every airline document is one chunk: all are under the chunker's 600
  characters);
- vector side: exact cosine (weft's arroy trees are approximate);
- keyword side: host/src/index/keyword.rs and store.rs (tokenizer, Lucene
  idf, BM25 k1 1.2 b 0.75, distinct query terms, ties to the older item);
- hybrid: host/src/index/mod.rs rrf_fuse (each side's k best, weighted
  reciprocal rank, first-appearance order on ties), k = k * fetch_factor;
- plugins/topk-retriever: keyword_stopwords, relevance rescaling, MMR with
  word-set Jaccard (lambda 0.7), k = 4 hits;
- the scenario's two states of the index: the before-updates questions see
  the 312 documents, the after-updates ones also the 120 new versions (a new
  version replaces its document and is a newer item).

    /tmp/venv/bin/python scripts/simulate-semantic-hybrid.py data/airline/questions-dev.jsonl
(a venv with numpy, safetensors and tokenizers; vectors are cached in --cache)
"""

import argparse
import importlib.util
import json
import math
import pathlib
import re
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "airline"
MODEL = ROOT / "pipelines" / "airline" / "models" / "all-MiniLM-L6-v2"
sys.path.insert(0, str(ROOT / "plugins" / "topk-retriever" / "src"))


def load_ref():
    spec = importlib.util.spec_from_file_location("ref", ROOT / "scripts" / "minilm-reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    return ref


def erf(x):
    # Abramowitz & Stegun 7.1.26
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152073) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


def encoder(ref):
    from safetensors.numpy import load_file

    w = {k: v.astype(np.float32) for k, v in load_file(str(MODEL / "model.safetensors")).items()}
    cfg = json.loads((MODEL / "config.json").read_text())
    heads, eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    def embed(ids):
        n = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
        x = ln(x, "embeddings.LayerNorm")
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            d = x.shape[1] // heads
            q = dense(x, p + "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
            k = dense(x, p + "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
            v = dense(x, p + "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
            x = ln(dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = ln(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        m = x.mean(0)
        return m / max(float(np.linalg.norm(m)), 1e-12)

    return embed


def vectors(texts, cache_path):
    cache = {}
    if cache_path.exists():
        cache = {k: np.array(v, dtype=np.float32) for k, v in json.loads(cache_path.read_text()).items()}
    todo = [t for t in texts if t not in cache]
    if todo:
        ref = load_ref()
        vocab = json.loads((MODEL / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        embed = encoder(ref)
        for i, t in enumerate(todo):
            cache[t] = embed(ref.tokenize(t, vocab))
            if i % 25 == 24 or i == len(todo) - 1:
                print(f"  embedded {i + 1}/{len(todo)}", file=sys.stderr, flush=True)
                cache_path.write_text(json.dumps({k: [float(x) for x in v] for k, v in cache.items()}))
    return cache


# ------------------------------------------------ keyword side (keyword.rs)
def tokenize(text):
    return [w.lower() for w in re.split(r"[^\w]|_", text) if w]


def query_terms(text):
    seen, out = set(), []
    for t in tokenize(text):
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


LUCENE = SNOWBALL = None


def stop_lists():
    src = (ROOT / "plugins" / "topk-retriever" / "src" / "stopwords.rs").read_text()
    def grab(name):
        body = src[src.index(f"pub const {name}"):]
        body = body[: body.index("];")]
        return set(re.findall(r'"([a-z]+)"', body))
    return {"none": set(), "lucene": grab("LUCENE"), "snowball": grab("SNOWBALL")}


def strip(text, stop):
    if not stop:
        return text
    kept = [w for w in tokenize(text) if w not in stop]
    return " ".join(kept) if kept else text


class Index:
    def __init__(self, docs, vec):
        self.docs = docs  # list of (item, doc_id, text), item order = age
        self.vec = np.stack([vec[t] for _, _, t in docs])
        self.toks = [tokenize(t) for _, _, t in docs]
        self.n = len(docs)
        self.avgdl = sum(len(t) for t in self.toks) / self.n
        self.df = {}
        for toks in self.toks:
            for w in set(toks):
                self.df[w] = self.df.get(w, 0) + 1

    def vector(self, q, k):
        s = self.vec @ q
        order = sorted(range(self.n), key=lambda i: (-s[i], i))[:k]
        return [(i, float(s[i])) for i in order]

    def keyword(self, text, k):
        scores = {}
        for term in query_terms(text):
            df = self.df.get(term)
            if not df:
                continue
            idf = math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))
            for i, toks in enumerate(self.toks):
                tf = toks.count(term)
                if tf:
                    norm = 1.0 - 0.75 + 0.75 * len(toks) / self.avgdl
                    scores[i] = scores.get(i, 0.0) + idf * tf * 2.2 / (tf + 1.2 * norm)
        return sorted(((i, s) for i, s in scores.items()), key=lambda x: (-x[1], x[0]))[:k]

    def hybrid(self, q, text, k, rrf_k, vw, kw):
        order, score = [], {}
        for lst, wgt in ((self.vector(q, k), vw), (self.keyword(text, k), kw)):
            for r, (i, _) in enumerate(lst):
                s = wgt / (rrf_k + r + 1.0)
                if i in score:
                    score[i] += s
                else:
                    order.append(i)
                    score[i] = s
        out = [(i, score[i]) for i in order]
        out.sort(key=lambda x: -x[1])  # stable
        return out[:k]


# ----------------------------------------------- plugin side (mmr.rs, lib.rs)
MMR_STOP = set("a an the and or but if of to in on at by for with from as is are was were be been it its this that these those you your we our they their not no can may will".split())


def word_set(t):
    return {w for w in tokenize(t) if w not in MMR_STOP}


def mmr(cands, k, lam):
    k = min(k, len(cands))
    words = [word_set(t) for _, t in cands]
    picked, red, taken = [], [0.0] * len(cands), [False] * len(cands)
    while len(picked) < k:
        best = None
        for i in range(len(cands)):
            if taken[i]:
                continue
            m = lam * cands[i][0] - (1 - lam) * red[i]
            if best is None or m > best[0]:
                best = (m, i)
        if best is None:
            break
        i = best[1]
        taken[i] = True
        picked.append(i)
        for j in range(len(cands)):
            if not taken[j]:
                a, b = words[i], words[j]
                u = len(a | b)
                red[j] = max(red[j], len(a & b) / u if u else 0.0)
    return picked


def retrieve(ix, qvec, text, cfg, stops):
    n = 16  # k 4 * fetch_factor 4
    if cfg["mode"] == "vector":
        hits = ix.vector(qvec, n)
        rel = [s for _, s in hits]
    else:
        kt = strip(text, stops[cfg["stop"]])
        hits = ix.keyword(kt, n) if cfg["mode"] == "keyword" else ix.hybrid(qvec, kt, n, cfg["rrf_k"], cfg["vw"], cfg["kw"])
        mx = max([s for _, s in hits] + [0.0])
        rel = [s / mx if mx > 0 else 0.0 for _, s in hits]
    picked = mmr([(r, ix.docs[i][2]) for r, (i, _) in zip(rel, hits)], 4, 0.7)
    return [ix.docs[hits[p][0]][1] for p in picked]


GRID = [dict(mode="vector", label="vector")]
for sw in ("none", "lucene", "snowball"):
    GRID.append(dict(mode="keyword", stop=sw, label=f"keyword, stopwords {sw}"))
for sw in ("none", "lucene", "snowball"):
    for rrf_k in (60, 10):
        for vw, kw in ((1, 1), (1, 2), (1, 3)):
            GRID.append(dict(mode="hybrid", stop=sw, rrf_k=rrf_k, vw=vw, kw=kw, label=f"hybrid, stopwords {sw}, rrf_k {rrf_k}, weights {vw}:{kw}"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("questions")
    ap.add_argument("--cache", default="/tmp/weft-minilm-vectors.json")
    ap.add_argument("--only", help="only configurations whose label is exactly this")
    args = ap.parse_args()
    docs = [json.loads(l) for l in (DATA / "docs.jsonl").read_text().splitlines() if l.strip()]
    ups = [json.loads(l) for l in (DATA / "updates.jsonl").read_text().splitlines() if l.strip()]
    qs = [json.loads(l) for l in pathlib.Path(args.questions).read_text().splitlines() if l.strip()]
    vec = vectors([d["text"] for d in docs + ups] + [q["text"] for q in qs], pathlib.Path(args.cache))
    before = [(i, d["id"], d["text"]) for i, d in enumerate(docs)]
    after = {d["id"]: (i, d["id"], d["text"]) for i, d in enumerate(docs)}
    for j, u in enumerate(ups):
        after[u["id"]] = (len(docs) + j, u["id"], u["text"])
    ix = {"before-updates": Index(before, vec), "after-updates": Index(sorted(after.values()), vec)}
    stops = stop_lists()
    grid = [g for g in GRID if not args.only or g["label"] == args.only]
    print("| configuration | before hit@1 / hit@3 | after hit@1 / hit@3 | all hit@1 / hit@3 |")
    print("|---|---|---|---|")
    for cfg in grid:
        ranks = {"before-updates": [], "after-updates": []}
        for q in qs:
            got = retrieve(ix[q["phase"]], vec[q["text"]], q["text"], cfg, stops)
            ranks[q["phase"]].append(got.index(q["gold_doc"]) + 1 if q["gold_doc"] in got else None)
        b, a = ranks["before-updates"], ranks["after-updates"]
        rate = lambda r, k: sum(1 for x in r if x is not None and x <= k) / max(len(r), 1)
        cell = lambda r: f"{rate(r, 1):.2f} / {rate(r, 3):.2f} ({len(r)})"
        print(f"| {cfg['label']} | {cell(b)} | {cell(a)} | {cell(b + a)} |", flush=True)


if __name__ == "__main__":
    main()
