"""A group filtering by subject against polling everything and filtering in Python.

A topic holds RECORDS records (100-byte values, 4 partitions); 1 % carry the
subject ``orders.eu.created``, the rest other subjects. Each round opens a
fresh group and consumes until it has no lag, acknowledging what it gets:

* target: a group opened with ``subjects=["orders.eu.*"]``: it hands out only
  the matching 1 %, the others count as done for it;
* baseline: a group without a filter; the consumer reads each message's
  ``subject`` header, matches it in Python (the same wildcard as a compiled
  regular expression) and acknowledges every message.

Figure: matching records delivered per second; the goal compares it with the
baseline's rate over the same records (both deliver the same matching set).
"""

from __future__ import annotations

import itertools
import os
import re

from conftest import Contender, Figure, Goal, paired_rounds, rate, report, spread

import streamlog

RECORDS = 50_000
MATCH_EVERY = 100  # 1 %
ROUNDS = 5
_names = itertools.count()


def _fill(path: str) -> int:
    log = streamlog.open(path)
    t = log.topic("orders", partitions=4)
    noise = os.urandom(RECORDS + 100)
    matching = 0
    for i in range(RECORDS):
        if i % MATCH_EVERY == 0:
            subject = "orders.eu.created"
            matching += 1
        else:
            subject = ("orders.us.created", "orders.asia.paid", "billing.eu.created")[i % 3]
        t.append(noise[i:i + 100], key=b"k%d" % (i % 64), subject=subject)
    log.close()
    return matching


def _consume(state, subjects) -> int:
    log, name = state
    g = log.topic("orders").group(name, subjects=subjects)
    match = re.compile(rb"orders\.eu\.[^.]+\Z").match
    got = 0
    while True:
        msgs = g.poll(100, timeout=0)
        if msgs:
            if subjects is None:
                for m in msgs:
                    s = m.headers.get("subject")
                    if s is not None and match(s):
                        got += 1
            else:
                got += len(msgs)
            g.ack(msgs)
        elif g.lag() == 0:
            g.close()
            return got


def test_subject_filter_vs_python_filter(benchmark, bench_dir):
    """Matching records delivered per second: a filtering group vs filtering in Python."""
    path = f"{bench_dir}/subjects"
    matching = _fill(path)
    log = streamlog.open(path)
    counts: dict[str, int] = {}

    def setup():
        return (log, f"g{next(_names)}")

    def run_filtered(state):
        counts["filtered"] = _consume(state, ["orders.eu.*"])

    def run_python(state):
        counts["python"] = _consume(state, None)

    try:
        times = paired_rounds(benchmark,
                              Contender("group subjects=", run_filtered, setup),
                              [Contender("poll all + Python filter", run_python, setup)],
                              ROUNDS)
    finally:
        log.close()
    assert counts == {"filtered": matching, "python": matching}
    value = rate(matching, times["group subjects="])
    fig = Figure("test_subject_filter_vs_python_filter",
                 "subject filter, 1 % of the topic: matching records delivered", value,
                 "records/s",
                 {"poll all + Python filter": rate(matching, times["poll all + Python filter"])},
                 rounds=len(times["group subjects="]), spread=spread(times["group subjects="]))
    fig.goals = [Goal(">= 30x polling everything and filtering in Python",
                      fig.ratio("poll all + Python filter"), 30)]
    report(benchmark, fig)
