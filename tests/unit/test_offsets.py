"""streams.offsets.OffsetBook: what a worker commits, and past which markers."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from streams.offsets import OffsetBook


def position(topic: str, partition: int, offset: int) -> TopicPartition:
    return TopicPartition(topic, partition, offset)


def test_the_next_offset_after_each_record_is_committed() -> None:
    book = OffsetBook()
    book.processed("in", 0, 4)
    book.processed("in", 0, 5)
    book.processed("in", 1, 9)

    assert book.to_commit() == {("in", 0): 6, ("in", 1): 10}
    assert book.in_batch == 3


def test_positions_past_trailing_markers_are_committed_between_batches() -> None:
    book = OffsetBook()
    book.processed("in", 0, 5)

    offsets = book.to_commit([position("in", 0, 8), position("in", 1, 3)])

    # partition 0: records up to 5, then markers up to 8; partition 1 held markers only
    assert offsets == {("in", 0): 8, ("in", 1): 3}


def test_a_sought_partition_and_an_unknown_position_are_not_moved() -> None:
    book = OffsetBook()
    book.processed("in", 0, 5)
    book.seeked.add(("in", 0))

    assert book.to_commit([position("in", 0, 8), position("in", 1, -1001)]) == {("in", 0): 6}


def test_a_position_at_what_was_committed_is_not_committed_again() -> None:
    book = OffsetBook()
    book.processed("in", 0, 5)
    book.mark_committed(book.to_commit())

    assert book.to_commit([position("in", 0, 6)]) == {}
    assert book.to_commit([position("in", 0, 7)]) == {("in", 0): 7}
    assert book.in_batch == 0


def test_forgotten_partitions_leave_the_batch() -> None:
    book = OffsetBook()
    book.processed("in", 0, 5)
    book.processed("in", 1, 5)

    book.forget([TopicPartition("in", 1)])

    assert book.to_commit() == {("in", 0): 6}
