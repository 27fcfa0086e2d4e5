#!/usr/bin/env python3
"""Writes questions that name no flight, asked by booked customers
(metadata.customer_id), whose answer is their booked flight's status
document. Only a join with the customer's profile (the `customers` table)
can find it.

Each set also asks the policy questions of questions.jsonl (alternately
to the two sets) as booked customers, so the cost of ranking a customer's
flight higher on questions that are not about it is measured too.

Two disjoint sets of customers:
- data/airline/questions-customers-dev.jsonl (customers 2, 7, 12, ...): the
  only set settings may be chosen on (the retriever's `boost`);
- data/airline/questions-customers.jsonl (customers 0, 5, 10, ...): held
  out, the set whose figures are reported.

Deterministic, derived from customers.jsonl, docs.jsonl and updates.jsonl;
the templates were written before any run and are not changed by results.

    python3 scripts/make-customer-questions.py
"""
import json
from pathlib import Path

root = Path(__file__).resolve().parent.parent / "data" / "airline"
read = lambda f: [json.loads(l) for l in open(root / f, encoding="utf-8")]
customers = read("customers.jsonl")
status = {d["id"]: d["metadata"]["status"] for d in read("docs.jsonl") if d["kind"] == "flight-status"}
after = dict(status)
after.update({d["id"]: d["metadata"]["status"] for d in read("updates.jsonl")})

templates = [
    "Is my flight on time?",
    "What is the status of my flight?",
    "Has anything changed with my flight?",
    "Is my flight delayed?",
]

policy = [q for q in read("questions.jsonl") if q["gold_doc"].startswith("policy-")]


def questions(picked, prefix, policy_qs):
    out = []
    for i, c in enumerate(picked):
        doc = "flight-" + c["booking"]
        for phase, st in (("before-updates", status), ("after-updates", after)):
            out.append({
                "id": f"{prefix}-{phase[:1]}{i:03d}",
                "text": templates[i % len(templates)],
                "gold_doc": doc,
                "expect": st[doc],
                "phase": phase,
                "metadata": {"customer_id": c["id"]},
            })
    for i, q in enumerate(policy_qs):
        for phase in ("before-updates", "after-updates"):
            out.append(dict(q, id=f"{prefix}-p{phase[:1]}{i:03d}", phase=phase,
                            metadata={"customer_id": picked[i % len(picked)]["id"]}))
    return out


for name, picked, prefix, policy_qs in (
    ("questions-customers.jsonl", customers[::5], "cq", policy[::2]),
    ("questions-customers-dev.jsonl", customers[2::5], "cqdev", policy[1::2]),
):
    qs = questions(picked, prefix, policy_qs)
    with open(root / name, "w", encoding="utf-8") as f:
        for q in qs:
            f.write(json.dumps(q) + "\n")
    print(f"{name}: {len(qs)} questions from {len(picked)} customers")
