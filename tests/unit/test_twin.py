"""The twin test of a fenced worker: which group members count as another worker on its slot."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from streams.config import KafkaSettings
from streams.stage import recovery
from streams.stage.recovery import Recovery, new_incarnation

MINE = "000001796170769706-100-aaaaaaaa"
OLDER = "000001796170700000-99-bbbbbbbb"
NEWER = "000001796170800000-101-cccccccc"


class FakeAdmin:
    """describe_consumer_groups answers with the members given."""

    members: list[SimpleNamespace] = []  # noqa: RUF012 - set per test

    def __init__(self, _config: dict[str, Any]) -> None:
        self.asked = 0

    def describe_consumer_groups(self, groups: list[str], **_: Any) -> dict[str, Any]:
        self.asked += 1
        description = SimpleNamespace(members=FakeAdmin.members)
        return {groups[0]: SimpleNamespace(result=lambda timeout: description)}  # noqa: ARG005


def member(client_id: str, member_id: str = "m") -> SimpleNamespace:
    return SimpleNamespace(client_id=client_id, member_id=member_id, host="/10.0.0.1")


@pytest.fixture
def twin_test(monkeypatch: pytest.MonkeyPatch) -> Recovery:
    monkeypatch.setattr(recovery, "AdminClient", FakeAdmin)
    monkeypatch.setattr(recovery, "_TWIN_WAIT_S", 0.0)  # one look at the group
    monkeypatch.setattr("time.sleep", lambda _s: None)
    return Recovery(
        txn=SimpleNamespace(),  # type: ignore[arg-type]  # not used by the twin test
        group_id="p.copy",
        client_id=f"p.copy.0#{MINE}",
        kafka=KafkaSettings(bootstrap_servers="unused:9092"),
        stats=SimpleNamespace(),  # type: ignore[arg-type]
        rewind=lambda: None,
    )


def test_own_memberships_before_and_after_a_broker_restart_are_not_a_twin(
    twin_test: Recovery,
) -> None:
    # after a broker restart the group lists the membership from before it next to the new one
    FakeAdmin.members = [member(f"p.copy.0#{MINE}", "before"), member(f"p.copy.0#{MINE}", "after")]
    assert twin_test.twin_alive() is False


def test_an_older_incarnation_on_the_slot_is_not_a_twin(twin_test: Recovery) -> None:
    # a crashed predecessor stays listed until its session times out
    FakeAdmin.members = [member(f"p.copy.0#{OLDER}"), member(f"p.copy.0#{MINE}")]
    assert twin_test.twin_alive() is False


def test_a_newer_incarnation_on_the_slot_is_a_twin(twin_test: Recovery) -> None:
    FakeAdmin.members = [member(f"p.copy.0#{MINE}"), member(f"p.copy.0#{NEWER}")]
    assert twin_test.twin_alive() is True


def test_a_newer_incarnation_on_another_slot_is_not_a_twin(twin_test: Recovery) -> None:
    FakeAdmin.members = [member(f"p.copy.1#{NEWER}"), member(f"p.copy.01#{NEWER}")]
    assert twin_test.twin_alive() is False


def test_incarnations_sort_by_start_time() -> None:
    first = new_incarnation()
    later = f"{int(first.split('-')[0]) + 1:015d}-1-00000000"
    assert later > first
    assert len(first.split("-")[0]) == 15
