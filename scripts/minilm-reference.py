#!/usr/bin/env python3
"""Reference vectors of all-MiniLM-L6-v2 for the minilm-embedder fixture.

Reads tests/data/minilm/texts.jsonl and writes tests/data/minilm/reference.jsonl
({"id", "tokens", "vector"} per text), computed from the same model files the
plugin reads (default: pipelines/airline/models/all-MiniLM-L6-v2, installed by
scripts/setup). Run by hand only; CI uses the committed output.

    python3 scripts/minilm-reference.py              # --impl auto
    python3 scripts/minilm-reference.py --impl numpy

Two implementations:

- `sentence-transformers` (what `auto` uses when it imports): the library the
  model was published for. It needs torch, whose PyPI wheels for Linux pull
  several GB of CUDA libraries; install it yourself into the venv below
  (`.tools/minilm-ref/bin/pip install sentence-transformers`) if you can.
- `numpy`: an independent re-implementation that shares no code with the
  plugin (which uses the Rust `tokenizers` and candle crates): BERT's original
  BasicTokenizer + WordPiece written out below in plain Python (the vocabulary
  read from tokenizer.json), and the encoder in float64 numpy from
  model.safetensors (read with the `safetensors` package), mean pooling over
  the tokens, L2 normalisation, truncation at 256 tokens. As a cross-check of
  the tokenisation, the script compares its token ids with Hugging Face's
  `tokenizers` package (the library sentence-transformers uses) on every text
  and fails on any difference.

Without a venv, the script makes one in .tools/minilm-ref (numpy, safetensors,
tokenizers from PyPI; no torch) and re-runs itself there.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".tools" / "minilm-ref"
MAX_TOKENS = 256


def ensure_venv():
    """Re-execs inside .tools/minilm-ref, creating it on first use."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call(
            [str(py), "-m", "pip", "install", "-q", "numpy", "safetensors", "tokenizers"]
        )
    os.execv(str(py), [str(py), *sys.argv])


# ---------------------------------------------------------------- tokenizer
# BERT's BasicTokenizer + WordpieceTokenizer (uncased), as in Google's
# original tokenization.py, which Hugging Face's BertNormalizer,
# BertPreTokenizer and WordPiece model reproduce.


def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    if c in "\t\n\r":
        return False
    return unicodedata.category(c).startswith("C")


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(cp):
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokens(text):
    out = []
    for c in text:
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or is_control(c):
            continue
        if is_whitespace(c):
            out.append(" ")
        elif is_cjk(cp):
            out.append(f" {c} ")
        else:
            out.append(c)
    words = []
    for w in "".join(out).split():
        w = unicodedata.normalize("NFD", w)
        w = "".join(c for c in w if unicodedata.category(c) != "Mn").lower()
        cur = ""
        for c in w:
            if is_punctuation(c):
                if cur:
                    words.append(cur)
                    cur = ""
                words.append(c)
            else:
                cur += c
        if cur:
            words.append(cur)
    return words


def wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            sub = word[start:end]
            if start > 0:
                sub = "##" + sub
            if sub in vocab:
                found = sub
                break
            end -= 1
        if found is None:
            return ["[UNK]"]
        pieces.append(found)
        start = end
    return pieces


def tokenize(text, vocab):
    pieces = [p for w in basic_tokens(text) for p in wordpiece(w, vocab)]
    pieces = ["[CLS]", *pieces[: MAX_TOKENS - 2], "[SEP]"]
    return [vocab[p] for p in pieces]


# ------------------------------------------------------------------ encoder


def encoder(model_dir):
    import numpy as np
    from safetensors.numpy import load_file

    w = {k: v.astype(np.float64) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    cfg = json.loads((model_dir / "config.json").read_text())
    heads, eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]
    erf = np.frompyfunc(math.erf, 1, 1)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    def embed(ids):
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
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
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)).astype(np.float64))
            x = ln(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        m = x.mean(0)
        return m / max(np.linalg.norm(m), 1e-12)

    return embed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", choices=["auto", "sentence-transformers", "numpy"], default="auto")
    ap.add_argument("--model-dir", default=str(ROOT / "pipelines/airline/models/all-MiniLM-L6-v2"))
    ap.add_argument("--texts", default=str(ROOT / "tests/data/minilm/texts.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "tests/data/minilm/reference.jsonl"))
    args = ap.parse_args()
    ensure_venv()
    model_dir = Path(args.model_dir)
    texts = [json.loads(l) for l in Path(args.texts).read_text(encoding="utf-8").splitlines() if l.strip()]

    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    ids = [tokenize(t["text"], vocab) for t in texts]
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    hf.enable_truncation(MAX_TOKENS)
    hf.no_padding()
    bad = [(t["id"], a, hf.encode(t["text"]).ids) for t, a in zip(texts, ids) if a != hf.encode(t["text"]).ids]
    for tid, a, b in bad:
        print(f"{tid}: tokenisation differs\n  ours {a}\n  hf   {b}", file=sys.stderr)
    if bad:
        sys.exit(f"{len(bad)} texts tokenise differently; fix before trusting the reference")

    impl = args.impl
    if impl == "auto":
        try:
            import sentence_transformers  # noqa: F401

            impl = "sentence-transformers"
        except ImportError:
            impl = "numpy"
    if impl == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir), device="cpu")
        st.max_seq_length = MAX_TOKENS
        vectors = st.encode([t["text"] for t in texts], normalize_embeddings=True, batch_size=16)
    else:
        embed = encoder(model_dir)
        vectors = [embed(i) for i in ids]
    with open(args.out, "w", encoding="utf-8") as f:
        for t, i, v in zip(texts, ids, vectors):
            row = {"id": t["id"], "tokens": len(i), "vector": [round(float(x), 7) for x in v]}
            f.write(json.dumps(row) + "\n")
    print(f"{len(texts)} reference vectors ({impl}) -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
