"""The autoscaling signal of a stage: how many replicas its work needs, right for exactly-once.

::

    work       = lag + retry_due
    wanted     = ceil(work / records_per_replica)
    suggested  = clamp(wanted, 1, partitions)
    breaker    : suggested = min(suggested, max(current, 1))   # scale-out holds, scale-in not

- ``lag``: records behind the **last stable offset** of the stage's input topics, summed over
  their partitions (``streams.lag``). Records of an open transaction are not consumable yet,
  and transaction markers are no records: a partition whose only offsets before the LSO are
  markers has lag 0. A partition without a commit counts ``LSO - log start`` (stages start
  from the earliest offset).
- ``retry_due`` / ``retry_not_due``: the visible records of the stage's retry topics between
  the group's committed offset and the LSO (the backlog region only), split by their
  ``streams.due.ms`` header against the monitor's clock (a record without the header is due).
  A worker holds a record that is not due (the partition is paused), so more workers would not
  finish it sooner: **not-due retries never count as work**.
- ``partitions``: the largest partition count of the stage's input topics. A consumer group
  gives each partition to one member, so replicas above it would sit idle (the cap).
- ``breaker_open``: a live worker of the group reports a dependency breaker open or half-open.
  Records meant for that dependency go to the delayed retry topics without a call; more
  workers would only hammer the dependency once it answers again, so **scale-out holds** at
  the current replica count (scale-in still happens: the lag falls while records are parked).
- **Never below 1, no scale to zero**: with no worker, no member holds the not-due retries
  (their due time passes unnoticed until an autoscaler polls again and a pod starts and
  initialises its transactions), and a stage at zero answers its first record seconds late.
  Set ``minReplicaCount: 1``; the signal is 1 for an idle stage.

``records_per_replica`` is the backlog one replica is expected to work off between two
autoscaler polls (``streams monitor --scale-records-per-replica``, default 1000); the
autoscaler's own stabilisation window (Kubernetes HPA: 300 s before a scale-in) smooths it.
Pure: no broker; ``streams.observability.server`` feeds it from each sample.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_RECORDS_PER_REPLICA", "ScaleSignal", "suggest_replicas"]

# A replica's share of the backlog: 1000 records is a few seconds of work for a stage that does
# a few hundred records/s per worker (bench/results/scale-*.json), so one autoscaler poll (KEDA:
# 30 s) cannot add workers for a backlog that one worker clears before they start.
DEFAULT_RECORDS_PER_REPLICA = 1000


@dataclass(frozen=True)
class ScaleSignal:
    """``GET /api/scale/<group>``: the stage's work, its cap, and the replicas it should have."""

    group: str
    lag: int
    retry_due: int
    retry_not_due: int
    partitions: int
    breaker_open: bool
    current_replicas: int
    suggested_replicas: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suggest_replicas(
    *,
    lag: int,
    retry_due: int,
    partitions: int,
    current_replicas: int,
    breaker_open: bool,
    records_per_replica: int = DEFAULT_RECORDS_PER_REPLICA,
) -> tuple[int, str]:
    """(suggested replicas, why) by the formula of the module docstring."""
    if records_per_replica < 1:
        raise ValueError("records_per_replica must be at least 1")
    work = max(0, lag) + max(0, retry_due)
    cap = max(1, partitions)
    wanted = math.ceil(work / records_per_replica)
    if work == 0:
        return 1, "idle: no lag and no due retry (1 is the minimum: no scale to zero)"
    suggested = max(1, min(wanted, cap))
    why = (
        f"{work} records of work (lag {lag} + due retries {retry_due}) at "
        f"{records_per_replica} per replica"
    )
    if wanted > cap:
        why += f": {wanted} wanted, capped at {cap} input partitions"
    held = max(1, current_replicas)
    if breaker_open and suggested > held:
        return held, f"{why}; scale-out held at {held}: a dependency breaker is open"
    return suggested, why
