"""Consumer lag per group and partition, with a Burrow-style health status and a time lag.

::

    monitor = LagMonitor(window_s=300)
    for group in monitor.sample():            # call every few seconds; history drives the status
        print(group.group, group.status, group.rule)
    view = monitor.pipeline_view(pipeline)    # per stage: input lag, retry backlog, DLQ depth

The package: ``status`` (the pure rules and their table), ``marks`` (replay tasks as the lag
view marks them), ``fetch`` (every broker request, and how a snapshot stays a fixed number of
batched requests), ``snapshot`` (the data of one sample), ``view`` (the pipeline view) and
``monitor`` (``LagMonitor``, which keeps the history).

**Lag is measured against the LSO** (``lag = LSO - committed``): our stages read with
``read_committed``, so records behind an open transaction are not consumable yet and are reported
separately as ``pending_transactional = HW - LSO``. Kafka's own ``kafka-consumer-groups
--describe`` measures against the HW, so its LAG is ours plus ``pending_transactional``.

**Trailing transaction markers.** Our stages commit the consumer *position* between batches, which
is past the commit marker, so a caught-up stage has ``committed == LSO`` and lag 0. A consumer
that commits ``last record + 1`` instead stops one below the marker (lag 1 forever,
librdkafka#3917). Where the lag is > 0 we read from the committed offset with a read_committed
consumer anyway (for the time lag); if that read reaches the end of the partition without one
visible record, everything in ``[committed, LSO)`` is markers or aborted records, and the lag is
reported as 0 (the rule says so). Only ranges we read are corrected this way.

**No commit** is ``committed = None`` and ``lag = None`` (never -1, never "lag = HW"). Partitions
listed are those the group committed on, those assigned to its live members, and every partition
of the topics given as hints (``sample(topics=...)``; ``view.lag_hints`` for a pipeline).

**Time lag** (``lag_seconds``), where lag > 0:

- ``"read"``: now minus the timestamp of the first visible record at or after the committed
  offset (the oldest record the group has not processed), read with one read_committed consumer
  assigned to all those partitions at once. Exact, and cached per (topic, partition, offset) since
  a committed record's timestamp never changes; it costs a fetch per partition on the first
  sample after a commit moves. At most ``max_reads`` partitions are read per sample, within
  ``read_timeout_s``; partitions left over fall back to interpolation.
- ``"interpolated"`` (kafka-lag-exporter's method): the time at which the LSO passed the
  committed offset, interpolated from this monitor's own history of (sample time, LSO) points, or
  extrapolated from their overall rate when the committed offset is older than the history. No
  extra requests, but needs two samples, assumes a steady produce rate between samples and is
  only as precise as the sampling interval. ``None`` when neither is possible.

The ``"read"`` method compares record timestamps with the injected clock, so the clock must give
epoch seconds (``time.time``, the default) for it to mean anything.

**Status**: see ``streams.lag.status`` for the rules, their order and how they differ from
Burrow's.

**Replay marks**: given a ``ReplaySource`` (``LagMonitor(replay=...)``), each group carries the
replay tasks affecting it (``replay``: a redrive or copy into its input, a reset of its offsets
in the last 10 minutes) and ``explained_by``, the task(s) that explain its status: a reset
explains a REWIND, any task explains a WARN or a lag. The status itself is kept; see
``streams.lag.marks``.
"""

from __future__ import annotations

from streams.lag.marks import ReplayMark, ReplaySource
from streams.lag.monitor import LagMonitor
from streams.lag.snapshot import (
    GroupLag,
    GroupMember,
    GroupSnapshot,
    Owner,
    PartitionLag,
    PartitionOffsets,
)
from streams.lag.status import Observation, Status, evaluate_partition, worst
from streams.lag.view import PipelineView, StageView, StateProgress, lag_hints

__all__ = [
    "GroupLag",
    "GroupMember",
    "GroupSnapshot",
    "LagMonitor",
    "Observation",
    "Owner",
    "PartitionLag",
    "PartitionOffsets",
    "PipelineView",
    "ReplayMark",
    "ReplaySource",
    "StageView",
    "StateProgress",
    "Status",
    "evaluate_partition",
    "lag_hints",
    "worst",
]
