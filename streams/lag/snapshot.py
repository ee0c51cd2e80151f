"""What one lag snapshot holds: groups as described, partition offsets, and the evaluated lag.

Plain data, no broker: ``streams.lag.fetch`` fills ``GroupSnapshot`` and ``PartitionOffsets``,
``LagMonitor`` turns them into ``PartitionLag`` and ``GroupLag`` (see ``streams.lag`` for what
each field means).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from streams.lag.marks import ReplayMark
from streams.lag.status import Status

__all__ = [
    "TP",
    "GroupLag",
    "GroupMember",
    "GroupSnapshot",
    "Owner",
    "PartitionLag",
    "PartitionOffsets",
]

TP = tuple[str, int]


@dataclass(frozen=True)
class PartitionOffsets:
    """Log start, high watermark and last stable offset of one partition."""

    log_start: int
    high_watermark: int
    last_stable_offset: int


@dataclass(frozen=True)
class Owner:
    """The member that owns a partition, as the member labels of the lag metrics name it."""

    host: str
    member_id: str
    client_id: str


@dataclass(frozen=True)
class GroupMember:
    """One live member of a consumer group and the partitions assigned to it."""

    member_id: str
    client_id: str
    host: str
    assignment: tuple[TP, ...] = ()

    @property
    def owner(self) -> Owner:
        return Owner(self.host, self.member_id, self.client_id)


@dataclass
class GroupSnapshot:
    """One group as one snapshot saw it: state, members with assignments, committed offsets."""

    group: str
    state: str
    members: tuple[GroupMember, ...] = ()
    committed: dict[TP, int | None] = field(default_factory=dict)

    @property
    def owners(self) -> dict[TP, Owner]:
        """(topic, partition) -> the member it is assigned to."""
        return {tp: m.owner for m in self.members for tp in m.assignment}

    @property
    def owned(self) -> set[TP]:
        return {tp for m in self.members for tp in m.assignment}

    @property
    def exists(self) -> bool:
        """False for a group the broker does not know: Dead, no member, no committed offset."""
        committed = any(offset is not None for offset in self.committed.values())
        return self.state != "Dead" or bool(self.members) or committed


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one consumer group on one partition (see ``streams.lag`` for each field)."""

    group: str
    topic: str
    partition: int
    committed: int | None
    log_start: int
    high_watermark: int
    last_stable_offset: int
    lag: int | None
    pending_transactional: int
    lag_seconds: float | None
    lag_seconds_method: str | None
    velocity: float | None
    eta_seconds: float | None
    status: Status
    rule: str
    data_loss: bool
    hanging_transaction: bool
    owner: Owner | None = None  # the live member it is assigned to; None: nobody
    # the replay task(s) of the group that explain this status (streams.lag.marks), described
    explained_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data


@dataclass(frozen=True)
class GroupLag:
    """One consumer group: its state, members and partitions, and the worst partition status."""

    group: str
    state: str
    members: int
    partitions: tuple[PartitionLag, ...]
    status: Status
    rule: str
    sum_lag: int
    max_lag: int
    max_lag_seconds: float | None
    exists: bool = True  # False: Dead with no member and no committed offset (see status)
    # replay tasks affecting the group now, and those of them that explain its status
    replay: tuple[ReplayMark, ...] = ()
    explained_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "exists": self.exists,
            "status": str(self.status),
            "rule": self.rule,
            "sum_lag": self.sum_lag,
            "max_lag": self.max_lag,
            "max_lag_seconds": self.max_lag_seconds,
            "replay": [mark.to_dict() for mark in self.replay],
            "explained_by": self.explained_by,
            "partitions": [p.to_dict() for p in self.partitions],
        }
