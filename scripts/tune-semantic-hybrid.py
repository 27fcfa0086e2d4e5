#!/usr/bin/env python3
"""Evaluates a fixed grid of retriever settings for the MiniLM + hybrid
(no flight filter) query pipeline with `weft eval`, against stored indexes,
and prints hit@1 / hit@3 per phase and overall as a Markdown table.

The grid is fixed here, before any run; every configuration is printed, the
chosen one included. Run it on data/airline/questions-dev.jsonl to choose;
run the chosen configuration (only) on questions-heldout.jsonl to report.

Needs two data directories holding the kb-minilm index of
ingest-semantic.toml: one after the documents only (the before-updates
questions are asked there) and one after the documents and the updates (the
after-updates questions), as the scenario asks them:

    W=target/debug/weft
    $W --data-dir /tmp/sem/d-before run pipelines/airline/ingest-semantic.toml \\
        --input data/airline/docs.jsonl --output /tmp/sem/ingest-docs.jsonl
    cp -a /tmp/sem/d-before /tmp/sem/d-after
    $W --data-dir /tmp/sem/d-after run pipelines/airline/ingest-semantic.toml \\
        --input data/airline/updates.jsonl --output /tmp/sem/ingest-updates.jsonl
    python3 scripts/tune-semantic-hybrid.py data/airline/questions-dev.jsonl \\
        --before /tmp/sem/d-before --after /tmp/sem/d-after

Each configuration's manifest is query-semantic-hybrid.toml with its
retriever `config` line replaced (written to a temporary directory, with the
model grant made absolute and a policy allowing that root).
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ROOT / "pipelines" / "airline" / "query-semantic-hybrid.toml"
MODEL = ROOT / "pipelines" / "airline" / "models" / "all-MiniLM-L6-v2"
COMMON = "k = 4, fetch_factor = 4, mmr_lambda = 0.7"

# (label, retriever config after COMMON). Fixed before the first run.
GRID = [("vector (query-semantic.toml)", "")]
for sw in ("none", "lucene", "snowball"):
    GRID.append((f"keyword, stopwords {sw}", f'mode = "keyword", keyword_stopwords = "{sw}"'))
for sw in ("none", "lucene", "snowball"):
    for rrf_k in (60, 10):
        for vw, kw in ((1, 1), (1, 2), (1, 3)):
            GRID.append(
                (
                    f"hybrid, stopwords {sw}, rrf_k {rrf_k}, weights {vw}:{kw}",
                    f'mode = "hybrid", rrf_k = {rrf_k}, vector_weight = {vw}.0, '
                    f'keyword_weight = {kw}.0, keyword_stopwords = "{sw}"',
                )
            )


def manifest(cfg: str) -> str:
    text = BASE.read_text(encoding="utf-8")
    line = f"config = {{ {COMMON}{', ' + cfg if cfg else ''} }}"
    text, n = re.subn(r'^config = \{ k = 4,.*mode = "hybrid".*\}$', line, text, flags=re.M)
    if n != 1:
        sys.exit(f"{BASE}: cannot find the retriever's config line")
    return text.replace('host = "models/all-MiniLM-L6-v2"', f'host = "{MODEL.resolve()}"')


def hits(report: dict) -> list:
    return [a.get("gold_rank") for a in report["asked"]]


def rate(ranks: list, k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / max(len(ranks), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("questions")
    ap.add_argument("--before", required=True, help="data dir: documents indexed")
    ap.add_argument("--after", required=True, help="data dir: documents and updates indexed")
    ap.add_argument("--weft", default=str(ROOT / "target" / "debug" / "weft"))
    ap.add_argument("--only", help="run only the configurations whose label contains this")
    ap.add_argument("--config", help="run only this retriever config (after the common part)")
    args = ap.parse_args()
    grid = [("given", args.config)] if args.config is not None else GRID
    if args.only:
        grid = [g for g in grid if args.only in g[0]]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="weft-tune-"))
    policy = tmp / "policy.toml"
    policy.write_text(f'allowed_file_roots = ["{MODEL.resolve()}"]\n', encoding="utf-8")
    print("| configuration | before hit@1 / hit@3 | after hit@1 / hit@3 | all hit@1 / hit@3 |")
    print("|---|---|---|---|")
    for i, (label, cfg) in enumerate(grid):
        m = tmp / f"q{i}.toml"
        m.write_text(manifest(cfg), encoding="utf-8")
        ranks = {}
        for phase, data in (("before-updates", args.before), ("after-updates", args.after)):
            out = tmp / f"q{i}-{phase}.json"
            cmd = [args.weft, "--policy", str(policy), "--data-dir", data, "eval",
                   args.questions, "--pipeline", str(m), "--phase", phase, "--json", str(out)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{' '.join(cmd)}\n{r.stderr}")
            rep = json.loads(out.read_text(encoding="utf-8"))
            if rep.get("failed"):
                print(f"  ({label}, {phase}: {len(rep['failed'])} failed, counted as misses)", file=sys.stderr)
            ranks[phase] = hits(rep)
        b, a = ranks["before-updates"], ranks["after-updates"]
        cell = lambda r: f"{rate(r, 1):.2f} / {rate(r, 3):.2f}"
        print(f"| {label} (`{cfg or 'vector'}`) | {cell(b)} ({len(b)}) | {cell(a)} ({len(a)}) | {cell(b + a)} ({len(b + a)}) |", flush=True)


if __name__ == "__main__":
    main()
