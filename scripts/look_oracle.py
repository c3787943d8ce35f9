"""What a perfect look would score: the ceiling of `visual_gain.relevance.accuracy` for a model that
checks some attributes of the query's subject in the video and nothing else (docs/MODEL.md).

    python scripts/look_oracle.py [data/riq/eval/synthetic.jsonl] [data/raw/annotations.jsonl]

For each set of attributes (colour; colour + shape; colour + size; colour + shape + size), an oracle
refuses a record exactly when the synthetic event log says one of the checks fails (no object of the
query's colour; that object has another shape / size: ``pipeline.model.targets.look_checks``, the
checks the ``look`` warm start teaches) and answers otherwise. On blind (grey) frames no colour is in
view, so the same oracle refuses every record: its blind accuracy is the refusable share. Prints
one JSON object: per attribute set the accuracy, the blind accuracy, their difference (the visual
gain the oracle would report), and the accuracy per edit set of the refusable records, so it says
which edits no attribute look can catch (actions, directions, order).

``reads``: the expected visual gain of a look whose colour check is perfect and whose shape and size
of the colour's object are read right with probability p each (a wrong read is one of the other
values, uniformly), for several p: how good the reads of the tower (``tower_probe.py --look``) and
the decoder must be for the bar of 0.10.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from pipeline.core.events import read_event_logs
from pipeline.core.io import read_jsonl
from pipeline.model.targets import look_checks
from pipeline.riq.schema import RiqRecord

ATTRIBUTE_SETS = (("color",), ("color", "shape"), ("color", "size"), ("color", "shape", "size"))


def oracle(records: list[RiqRecord], logs: dict, attributes: tuple[str, ...]) -> dict:
    right, by_edits, n_edits = 0, Counter(), Counter()
    for r in records:
        checks = look_checks(r, logs.get(r.video), attributes)
        refuses = checks is not None and not all(ok for _, ok, *_ in checks)
        ok = refuses == (r.task_type == "refusable")
        right += ok
        key = r.kind if r.kind != "hard_irrelevant" else "+".join(sorted(r.edits))
        by_edits[key] += ok
        n_edits[key] += 1
    accuracy = right / len(records)
    blind = sum(r.task_type == "refusable" for r in records) / len(records)
    return {
        "accuracy": round(accuracy, 3),
        "blind_accuracy": round(blind, 3),
        "visual_gain_accuracy": round(accuracy - blind, 3),
        "by_edits": {k: f"{by_edits[k]}/{n_edits[k]}" for k in sorted(n_edits)},
    }


def noisy_reads(records: list[RiqRecord], logs: dict, p: float) -> float:
    """Expected visual gain in accuracy of the colour-perfect look with shape and size reads right w.p. ``p``."""
    from pipeline.riq.synthetic import SHAPES, SIZES, parse_query

    def agrees(asked: str, true: str, values: tuple[str, ...]) -> float:
        return p if asked == true else (1 - p) / (len(values) - 1)

    right = 0.0
    for r in records:
        subject = parse_query(" ".join(r.problem.split())).subject
        obj = next((o for o in logs[r.video].objects if o.color == subject.color), None)
        answers = 0.0 if obj is None else agrees(subject.shape, obj.shape, SHAPES) * agrees(subject.size, obj.size, SIZES)
        right += answers if r.task_type == "answerable" else 1 - answers
    blind = sum(r.task_type == "refusable" for r in records) / len(records)
    return round(right / len(records) - blind, 3)


def main(riq: str, events: str) -> dict:
    records = [RiqRecord.model_validate(o) for _, o in read_jsonl(riq)]
    logs = read_event_logs(events)
    reads = {str(p): noisy_reads(records, logs, p) for p in (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)}
    return {"+".join(a): oracle(records, logs, a) for a in ATTRIBUTE_SETS} | {"reads": reads, "records": len(records)}


if __name__ == "__main__":
    args = sys.argv[1:] + ["data/riq/eval/synthetic.jsonl", "data/raw/annotations.jsonl"][len(sys.argv) - 1:]
    print(json.dumps(main(*args[:2]), indent=1))
