"""The broker requests of the lag monitor: offsets, group descriptions, commits, record reads.

**Offsets.** One snapshot is a fixed number of batched admin requests, whatever the number of
groups and partitions: ListConsumerGroups (unless groups are given), one DescribeConsumerGroups
for all groups, one ListConsumerGroupOffsets per group (librdkafka takes one group per request;
they are all in flight at once), then ListOffsets three times for every partition at once
(EARLIEST = log start; LATEST with READ_UNCOMMITTED = high watermark; LATEST with
READ_COMMITTED = last stable offset). Group offsets are fetched *before* the end offsets, so a
commit racing the snapshot cannot make the lag negative (kafka_exporter#287); it is clamped at 0
anyway.

**Members.** The one DescribeConsumerGroups of a snapshot is kept whole in ``GroupSnapshot``
(each member's id, client id, host and assignment): the STOP/STALL rules, the member labels of
the metrics and the CLI all read it from there, so no caller describes the groups again.

**Record reads** use read_committed consumers that never join a group (``assign()`` only):
``read_timestamps`` finds the timestamp of the first visible record at or after an offset (the
time lag); ``scan_visible`` reads ranges and reports the offsets that hold no visible record
(markers, aborted records), for the DLQ depth and retry backlog in records
(``streams.lag.visible``). Both stop at ``read_timeout_s``; what is left is read next time.

**Failures.** Every request waits at most ``request_timeout_s``; a transport error or a request
that never answers raises ``KafkaClientError`` with a message that says which request on which
servers. ``reconnect()`` drops the clients so that the next call builds new ones: after a broker
restart librdkafka's admin client was seen to leave every DescribeConsumerGroups unanswered
forever while other requests worked, so a failed snapshot should be followed by a reconnect.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError
from streams.kafka import admin as admin_specs
from streams.lag.snapshot import TP, GroupMember, GroupSnapshot, PartitionOffsets
from streams.lag.visible import Scan

__all__ = ["KafkaFetcher", "TimestampReader", "members_of"]

T = TypeVar("T")

# ListConsumerGroupOffsets returns this for a requested partition without a commit.
_NO_OFFSET = -1001


# reads the timestamp (ms) of the first visible record at or after each (topic, partition, offset);
# None in the result = read to the end without a visible record; missing = could not read
TimestampReader = Callable[[Sequence[tuple[str, int, int]]], dict[tuple[str, int, int], int | None]]


class KafkaFetcher:
    """The admin client and the two reading consumers of a ``LagMonitor``, built on first use."""

    def __init__(
        self, kafka: KafkaSettings, *, request_timeout_s: float, read_timeout_s: float
    ) -> None:
        self.kafka = kafka
        self.request_timeout_s = request_timeout_s
        self.read_timeout_s = read_timeout_s
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self._scanner: Consumer | None = None

    # -- clients -----------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(
                {**self.kafka.client_config(), "socket.connection.setup.timeout.ms": 5000}
            )
        return self._admin

    def reconnect(self) -> None:
        """Drop every client; the next request builds new ones (see the module docstring)."""
        self.close()

    def close(self) -> None:
        """Close the reading consumers (an admin client has nothing to close)."""
        readers = (self._reader, self._scanner)
        self._reader = self._scanner = self._admin = None
        for reader in readers:
            if reader is not None:
                reader.close()

    # -- requests ----------------------------------------------------------------------------

    def _fail(self, what: str, error: object) -> KafkaClientError:
        return KafkaClientError(
            f"cannot {what} on {self.kafka.bootstrap_servers}: {error}",
            hint="check that the broker answers (`streams local status`) and "
            "STREAMS_BOOTSTRAP_SERVERS points at it",
        )

    def _wait(self, future: Future[T], what: str) -> T:
        """The future's result; a request that never answers is a KafkaClientError too."""
        try:
            return future.result(timeout=self.request_timeout_s)
        except TimeoutError as error:  # concurrent.futures' own, whose message is empty
            raise self._fail(
                what, f"no answer within {self.request_timeout_s:g} s (TimeoutError)"
            ) from error

    def partition_counts(self) -> dict[str, int]:
        try:
            metadata = self.admin().list_topics(timeout=self.request_timeout_s)
        except KafkaException as error:
            raise self._fail("read cluster metadata", error) from error
        return {name: len(topic.partitions) for name, topic in metadata.topics.items()}

    def list_groups(self) -> list[str]:
        admin = self.admin()
        what = "list consumer groups"
        try:
            result = self._wait(
                admin.list_consumer_groups(request_timeout=self.request_timeout_s), what
            )
        except KafkaException as error:
            raise self._fail(what, error) from error
        return sorted(listing.group_id for listing in result.valid)

    def describe(self, group_ids: Sequence[str]) -> list[GroupSnapshot]:
        """One DescribeConsumerGroups for every group, members and assignments kept."""
        if not group_ids:
            return []
        what = "describe consumer groups"
        futures = self.admin().describe_consumer_groups(
            list(group_ids), request_timeout=self.request_timeout_s
        )
        infos = []
        for group_id in group_ids:
            try:
                description = self._wait(futures[group_id], what)
            except KafkaException as error:
                if _is_transport_error(error):
                    raise self._fail(what, error) from error
                infos.append(GroupSnapshot(group_id, "Dead"))  # e.g. GROUP_ID_NOT_FOUND
                continue
            state = getattr(description.state, "name", str(description.state))
            members = tuple(_member(m) for m in description.members or ())
            infos.append(GroupSnapshot(group_id, _state_name(state), members))
        return infos

    def fetch_committed(self, infos: Sequence[GroupSnapshot]) -> None:
        """Fill each snapshot's ``committed`` (None where the group has no commit)."""
        admin = self.admin()
        what = "list consumer group offsets"
        futures: dict[str, Future[Any]] = {}
        for info in infos:
            # one group per request (librdkafka's limit); all are in flight together
            futures.update(
                admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(info.group)],
                    request_timeout=self.request_timeout_s,
                )
            )
        for info in infos:
            try:
                result = self._wait(futures[info.group], what)
            except KafkaException as error:
                if _is_transport_error(error):
                    raise self._fail(what, error) from error
                continue
            for tp in result.topic_partitions or ():
                if tp.error is not None:
                    continue
                offset = tp.offset if tp.offset >= 0 and tp.offset != _NO_OFFSET else None
                info.committed[(tp.topic, tp.partition)] = offset

    def list_offsets(self, wanted: Iterable[TP]) -> dict[TP, PartitionOffsets]:
        """Log start, high watermark and LSO of every partition, in three batched requests."""
        tps = sorted(wanted)
        if not tps:
            return {}
        admin = self.admin()
        what = "list offsets"
        specs = (
            (admin_specs.earliest(), IsolationLevel.READ_UNCOMMITTED),
            (admin_specs.latest(), IsolationLevel.READ_UNCOMMITTED),
            (admin_specs.latest(), IsolationLevel.READ_COMMITTED),
        )
        requests = [
            admin.list_offsets(
                {TopicPartition(topic, partition): spec for topic, partition in tps},
                isolation_level=isolation,
                request_timeout=self.request_timeout_s,
            )
            for spec, isolation in specs
        ]
        found: list[dict[TP, int]] = []
        for futures in requests:
            values: dict[TP, int] = {}
            for tp, future in futures.items():
                try:
                    values[(tp.topic, tp.partition)] = self._wait(future, what).offset
                except KafkaException as error:
                    if _is_transport_error(error):
                        raise self._fail(what, error) from error
            found.append(values)
        starts, highs, stables = found
        return {
            tp: PartitionOffsets(starts[tp], highs[tp], min(stables[tp], highs[tp]))
            for tp in tps
            if tp in starts and tp in highs and tp in stables
        }

    def topic_offsets(self, topics: Iterable[str]) -> dict[TP, PartitionOffsets]:
        """``list_offsets`` for every partition of the given topics (missing topics: none)."""
        counts = self.partition_counts()
        return self.list_offsets([(t, p) for t in topics for p in range(counts.get(t, 0))])

    # -- record reads ------------------------------------------------------------------------

    def read_timestamps(
        self, keys: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int | None]:
        """Timestamp of the first visible record at or after each offset; None = none before
        the LSO. One read_committed consumer, all partitions assigned at once; a partition wanted
        at several offsets (several groups) is read again in a later round."""
        reader = self._reader_consumer()
        results: dict[tuple[str, int, int], int | None] = {}
        deadline = time.monotonic() + self.read_timeout_s
        for assignment in _rounds(keys):
            if time.monotonic() >= deadline:
                break
            reader.assign([TopicPartition(t, p, o) for (t, p), o in assignment.items()])
            waiting = dict(assignment)
            while waiting and time.monotonic() < deadline:
                for message in reader.consume(num_messages=10_000, timeout=0.05):
                    tp = (message.topic(), message.partition())
                    if tp not in waiting:
                        continue
                    error = message.error()
                    if error is None:
                        _, timestamp = message.timestamp()
                        results[(*tp, waiting.pop(tp))] = timestamp
                    elif error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                        results[(*tp, waiting.pop(tp))] = None
                    else:
                        waiting.pop(tp)  # out of range, deleted...: fall back to interpolation
            reader.unassign()
        return results

    def scan_visible(self, ranges: Mapping[TP, tuple[int, int]]) -> dict[TP, Scan]:
        """Read each ``[start, end)`` with read_committed; the offsets without a visible record.

        All partitions at once, until each reaches its end or ``read_timeout_s`` passes (a
        partition cut short reports how far it got). A read_committed consumer skips markers
        and aborted records, so the gaps between the offsets it returns are exactly those.
        """
        wanted = {tp: (start, end) for tp, (start, end) in ranges.items() if end > start}
        if not wanted:
            return {}
        scans = {tp: Scan(start, start) for tp, (start, _) in wanted.items()}
        scanner = self._scanner_consumer()
        scanner.assign([TopicPartition(t, p, start) for (t, p), (start, _) in wanted.items()])
        deadline = time.monotonic() + self.read_timeout_s
        paused: list[TopicPartition] = []
        try:
            while wanted and time.monotonic() < deadline:
                for message in scanner.consume(num_messages=10_000, timeout=0.05):
                    tp = (message.topic(), message.partition())
                    if tp in wanted and _scanned(scans[tp], wanted[tp][1], message):
                        del wanted[tp]
                        paused.append(TopicPartition(*tp))
                        scanner.pause(paused[-1:])  # done: stop fetching it
        finally:
            # librdkafka keeps a partition paused across unassign() and a later assign()
            if paused:
                scanner.resume(paused)
            scanner.unassign()
        return scans

    def _reader_consumer(self) -> Consumer:
        if self._reader is None:
            # one record per partition is all it needs: keep fetches small and quick
            self._reader = self._consumer(
                {"fetch.wait.max.ms": 10, "max.partition.fetch.bytes": 4096}
            )
        return self._reader

    def _scanner_consumer(self) -> Consumer:
        if self._scanner is None:
            # reads whole ranges: librdkafka's default fetch sizes, a short fetch wait
            self._scanner = self._consumer({"fetch.wait.max.ms": 10})
        return self._scanner

    def _consumer(self, tuning: dict[str, Any]) -> Consumer:
        return Consumer(
            {
                **self.kafka.client_config(),
                # never joins or commits: assign() only; the id just satisfies the client
                "group.id": f"streams-lag-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "error",
                "queued.max.messages.kbytes": 1024,
                **tuning,
            }
        )


def _scanned(scan: Scan, end: int, message: Any) -> bool:
    """Add one consumed message (or event) to a partition's scan; True once it is done."""
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001
            scan.failed = True  # out of range (retention), deleted topic...: start again
            return True
        offset = min(max(message.offset(), scan.to), end)  # EOF: nothing visible up to here
    else:
        offset = min(message.offset(), end)
    if offset > scan.to:
        scan.gaps.append((scan.to, offset))
    if error is None and offset < end:
        scan.visible += 1
        offset += 1
    scan.to = offset
    return scan.to >= end or error is not None


def _member(member: Any) -> GroupMember:
    """A ``GroupMember`` from a confluent_kafka ``MemberDescription``."""
    assignment = member.assignment
    return GroupMember(
        member_id=str(member.member_id or ""),
        client_id=str(member.client_id or ""),
        host=str(member.host or "").lstrip("/"),
        assignment=tuple(
            (str(tp.topic), int(tp.partition))
            for tp in (assignment.topic_partitions if assignment is not None else ())
        ),
    )


def members_of(descriptions: Iterable[Any]) -> dict[str, tuple[GroupMember, ...]]:
    """group -> its members, from confluent_kafka ``ConsumerGroupDescription`` objects."""
    return {str(d.group_id): tuple(_member(m) for m in d.members or ()) for d in descriptions}


def _rounds(keys: Sequence[tuple[str, int, int]]) -> list[dict[TP, int]]:
    """Split reads into assignments with each partition at most once (one position each)."""
    rounds: list[dict[TP, int]] = []
    for topic, partition, offset in keys:
        for assignment in rounds:
            if (topic, partition) not in assignment:
                assignment[(topic, partition)] = offset
                break
        else:
            rounds.append({(topic, partition): offset})
    return rounds


def _state_name(state: str) -> str:
    """librdkafka's state names (STABLE, EMPTY...) as Kafka's tools print them."""
    return state.replace("_", " ").title().replace(" ", "")


def _is_transport_error(error: KafkaException) -> bool:
    kafka_error = error.args[0] if error.args else None
    if not isinstance(kafka_error, KafkaError):
        return True
    return kafka_error.code() in {
        KafkaError._TRANSPORT,  # noqa: SLF001
        KafkaError._TIMED_OUT,  # noqa: SLF001
        KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
    }
