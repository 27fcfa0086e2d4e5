#!/usr/bin/env python3
"""Splits data/airline/questions.jsonl into a dev set and a held-out set,
deterministically, so retrieval settings can be chosen on one half and
reported on the other.

- data/airline/questions-dev.jsonl: the only questions settings may be
  chosen on (hybrid weights, rrf_k, keyword stopwords, ...);
- data/airline/questions-heldout.jsonl: held out, the figures to report.

The split is by gold document, not by question: a question goes to dev when
the first byte of sha256(gold_doc) is even. So the paraphrases of one policy
question ("extra checked bag" / "additional suitcase") land on the same side,
and the held-out questions ask about documents no dev question asks about.
The rule was fixed before any per-question result was looked at; it reads
nothing but the gold document ids. questions.jsonl itself is unchanged (other
tests and scenarios use all 73).

    python3 scripts/split-questions.py
"""

import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "airline"


def is_dev(gold_doc: str) -> bool:
    return hashlib.sha256(gold_doc.encode("utf-8")).digest()[0] % 2 == 0


def main() -> None:
    lines = [
        line
        for line in (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    dev, held = [], []
    for line in lines:
        q = json.loads(line)
        (dev if is_dev(q["gold_doc"]) else held).append(line)
    for name, part in (("questions-dev.jsonl", dev), ("questions-heldout.jsonl", held)):
        (DATA / name).write_text("".join(l + "\n" for l in part), encoding="utf-8")
    for name, part in (("dev", dev), ("held-out", held)):
        phases: dict = {}
        for line in part:
            p = json.loads(line).get("phase", "")
            phases[p] = phases.get(p, 0) + 1
        print(f"{name}: {len(part)} questions {dict(sorted(phases.items()))}")


if __name__ == "__main__":
    main()
