"""Who may start and promote experiments: an admin by default, or the loop itself in automatic mode.

By default (``LLMPROXY_EXPERIMENTS_AUTO`` unset or 0) the machine actors only *propose*:

* the candidate job stores a candidate and opens an experiment in status ``pending`` (awaiting
  ``start``); nothing reaches traffic until an admin approves it;
* the evaluator, when the statistics say promote, marks the running experiment awaiting
  ``promote`` (it keeps running, the figures keep updating) until an admin approves.

Approval: ``llmproxy experiments approve ID`` (control API ``ApproveExperiment``, role admin), the
dashboard's Experiments page, or :func:`intelligence.enhance.manage.approve_experiment`. An admin
who starts or promotes an experiment directly (control API, dashboard) decides it themselves; that
is recorded as the admin's approval. Roll-backs (including the guard rails) never wait: they take
traffic back to the unchanged request.

``LLMPROXY_EXPERIMENTS_AUTO=1`` (also true/yes/on) is the automatic mode: the candidate job's
proposals start at once and the evaluator promotes, each recorded as an approval with actor
``candidate-job``/``evaluator`` and mode ``auto``. Every approval, manual or automatic, is in the
experiment's history, the hash-chained audit log (kind ``experiment``, action ``approved``) and the
event feed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

AUTO_ENV = "LLMPROXY_EXPERIMENTS_AUTO"
_TRUE = frozenset({"1", "true", "yes", "on"})


def auto_approval(env: Mapping[str, str] | None = None) -> bool:
    """True when the policy flag lets the loop start and promote experiments without an admin."""
    env = os.environ if env is None else env
    return str(env.get(AUTO_ENV, "")).strip().lower() in _TRUE


__all__ = ["AUTO_ENV", "auto_approval"]
