"""What a stage worker does when its transaction fails: abort, recreate the producer, or stop.

===========================================  ==================================================
failure                                      recovery
===========================================  ==================================================
abortable (a failed delivery, a generation   abort, then rewind every assigned partition to its
error after a rebalance)                     committed offset (the batch is processed again)
fatal, or a commit whose outcome is unknown  a new producer with the same transactional.id
                                             (its init_transactions resolves the outcome), rewind
fenced, and the group shows a newer worker   stop: ``FencedError`` (exit code 4); the other
on this slot (a twin)                        worker carries on with this slot
fenced without a twin (a broker restart, a   a new producer, rewind
timed-out transaction bumped the epoch)
===========================================  ==================================================

A twin is told apart by the *incarnation* at the end of its consumer's client.id
(``<group>.<slot>#<incarnation>``, one per worker process: start time first, so that newer
sorts higher), never by ``consumer.memberid()``: after a broker restart the group lists this
worker's membership from before the restart next to its new one for a session timeout, and
``memberid()`` returns None until the consumer has rejoined, so a member-id test took the
worker's own memberships for a twin and stopped it.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings
from streams.exceptions import FencedError, StreamsError, TransactionError
from streams.kafka.errors import FENCED_NAMES
from streams.kafka.transaction import Transaction
from streams.stats import StageStats

__all__ = ["Recovery", "new_incarnation"]

log = logging.getLogger("streams.stage")

# How long a fenced worker looks for a twin in its group before it concludes there is none.
# A twin's consumer joins right after its init_transactions(); the wait only delays recovery
# from a broker restart, which takes longer than this anyway.
_TWIN_WAIT_S = 12.0
# Between a slot's client.id and the incarnation: "<group>.<slot>#<incarnation>".
_INCARNATION_SEP = "#"


def new_incarnation() -> str:
    """A worker process's mark: start time (ms, zero-padded: sorts as it compares), pid, random."""
    return f"{time.time_ns() // 1_000_000:015d}-{os.getpid()}-{secrets.token_hex(4)}"


class Recovery:
    """Recovers one worker's transaction; ``rewind`` seeks the input back to the committed."""

    def __init__(
        self,
        *,
        txn: Transaction,
        group_id: str,
        client_id: str,
        kafka: KafkaSettings,
        stats: StageStats,
        rewind: Callable[[], None],
    ) -> None:
        self._txn = txn
        self._group_id = group_id
        self._client_id = client_id
        self._kafka = kafka
        self._stats = stats
        self._rewind = rewind

    def recover(self, error: TransactionError) -> None:
        """Abort or recreate the producer as the error requires, then rewind."""
        txn = self._txn
        age_ms = txn.age_s * 1000
        if txn.is_open or error.requires_abort:
            self._stats.transactions_aborted += 1
        if error.requires_abort and not error.fatal:
            log.warning("transaction aborted, rewinding: %s", error)
            try:
                txn.abort()
            except TransactionError:
                self.reset_producer(error)
        else:
            if error.code in FENCED_NAMES:
                # Fenced by a twin (another live worker on this slot: stop, it carries on), or
                # by an epoch bump without one (a broker restart, our own timed-out
                # transaction: recreate the producer). The group says which.
                if self.twin_alive():
                    raise FencedError(
                        f"stage {self._group_id}: fenced by another worker with "
                        f"transactional.id {txn.transactional_id}; stopping without "
                        "committing (its records are processed by the newer worker)"
                    ) from error
                log.warning(
                    "producer fenced (transaction age %.0f ms) and no other worker runs this "
                    "slot: a broker restart or a timed-out transaction; recreating it",
                    age_ms,
                )
            self.reset_producer(error)
        self._rewind()

    def reset_producer(self, error: StreamsError, *, config: dict[str, Any] | None = None) -> None:
        """A new producer, same transactional.id (``config``: new settings for it)."""
        log.warning("recreating the transactional producer after: %s", error)
        self._stats.producer_resets += 1
        self._txn.reset(config)

    def abort_quietly(self) -> None:
        """Stopping on an error: abort what is open, if anything; never raise."""
        if self._txn.is_open:
            try:
                self._txn.abort()
            except TransactionError:
                log.warning("abort while stopping failed; the coordinator will time it out")

    def abort_lost(self) -> bool:
        """Partitions were lost: abort the open transaction; True if one was open."""
        if not self._txn.is_open:
            return False
        self._stats.transactions_aborted += 1
        try:
            self._txn.abort()
        except TransactionError as error:
            self.reset_producer(error)
        return True

    def twin_alive(self) -> bool:
        """True if a newer worker runs this slot: a member with a newer incarnation.

        ``client_id`` is this worker's consumer client.id, ``<group>.<slot>#<incarnation>``.
        Not twins: this worker's own memberships, whatever their member id (after a broker
        restart the group can list one from before the restart until its session times out),
        and older incarnations (a crashed predecessor is listed until its session times out;
        an older live twin stops by itself: fenced by us, it finds us newer). Asked for up to
        _TWIN_WAIT_S: a twin fences us at its init_transactions(), a moment before its
        consumer joins the group.
        """
        slot, _, mine = self._client_id.partition(_INCARNATION_SEP)
        prefix = f"{slot}{_INCARNATION_SEP}"
        admin = AdminClient(self._kafka.client_config())
        deadline = time.monotonic() + _TWIN_WAIT_S
        while True:
            try:
                futures = admin.describe_consumer_groups([self._group_id], request_timeout=5)
                description = futures[self._group_id].result(timeout=10)
                for member in description.members:
                    client_id = member.client_id or ""
                    if client_id.startswith(prefix) and client_id[len(prefix) :] > mine:
                        log.warning(
                            "a newer worker runs this slot: member %s, client.id %s, host %s",
                            member.member_id,
                            client_id,
                            member.host,
                        )
                        return True
            except KafkaException:
                log.debug("describe_consumer_groups failed; asking again", exc_info=True)
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)
