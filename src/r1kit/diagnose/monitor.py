"""Live warnings: the doctor's rules on each row a trainer logs, one warning per problem.

    monitor = Monitor(config)                        # the run's config as a dict (to_dict(cfg))
    ...
    monitor.observe(step, metrics)                   # after each logged step; returns the new findings
    monitor.replay(rows)                             # on resume: the rows logged before, without warnings

The first time a rule fires on a metric, `observe` logs one warning on the `r1kit.doctor` logger (the
finding's message, metric, steps and advice) and returns it; later rows that show the same problem only
add their steps to it (`monitor.findings()`), so a run that stays broken does not warn every step. The
rules are the doctor's (`diagnose.rules`), judged on the rows seen so far, so `r1kit doctor` on the
finished run reports what the monitor warned about.
"""

from __future__ import annotations

import logging
from typing import Iterable

from r1kit.diagnose.rules import Diagnosis, Finding

log = logging.getLogger("r1kit.doctor")


class Monitor:
    """The doctor's rules over a running run's metrics; `observe` each logged row."""

    def __init__(self, config: dict | None = None):
        self.diagnosis = Diagnosis(config)

    def observe(self, step: int, metrics: dict, completions: list[dict] | None = None) -> list[Finding]:
        """Judge the metrics logged at `step` (and, optionally, the step's completion rows, each with
        `rewards/<name>` values: they let the None rule see functions that score only some rows). Logs a
        warning for each finding seen for the first time and returns those."""
        new = self.diagnosis.add(step, metrics, completions)
        for f in new:
            log.warning("%s at step %d: %s\n  metric: %s\n  try: %s", f.title, step, f.message, f.metric, f.advice)
        return new

    def replay(self, rows: Iterable[dict]) -> None:
        """Judge rows logged before a resume (metrics.jsonl rows, each with its "step") without warning:
        their warnings were given in the session that logged them. The rules then see the whole run."""
        for row in rows:
            self.diagnosis.add(row["step"], row)

    def findings(self) -> list[Finding]:
        """Every finding so far, with all the steps that showed it."""
        return self.diagnosis.findings()
