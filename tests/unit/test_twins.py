"""The start-up twin rule: which members on a worker's slot are live, which are predecessors."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.config import KafkaSettings
from streams.stage import twins
from streams.stage.recovery import new_incarnation
from streams.stage.twins import Incarnation, TwinRunningError, classify, refuse_live_twin

MINE_TEXT = "000001796170769706-100-aaaaaaaa@enrich-0"
MINE = Incarnation.parse(MINE_TEXT)
PREFIX = "p.copy.0#"


def verdict(client_id: str, started: dict[int, float]) -> str:
    assert MINE is not None
    return classify(
        client_id, slot_prefix=PREFIX, mine=MINE, mine_text=MINE_TEXT, started_at=started.get
    )


def test_a_live_process_on_this_host_that_started_before_its_incarnation_is_a_twin() -> None:
    # pid 99 started at 1796170700.0 s, its incarnation at ...700.5 s: that process is it
    assert verdict(f"{PREFIX}000001796170700500-99-bbbbbbbb@enrich-0", {99: 1796170700.0}) == "twin"


def test_a_dead_pid_a_reused_pid_and_our_own_pid_are_predecessors() -> None:
    old = "000001796170700500"
    assert verdict(f"{PREFIX}{old}-99-bbbbbbbb@enrich-0", {}) == "predecessor"
    # pid 99 now belongs to a process that started 60 s after that incarnation
    assert verdict(f"{PREFIX}{old}-99-bbbbbbbb@enrich-0", {99: 1796170760.0}) == "predecessor"
    # a restarted container: the predecessor had the pid we have now
    assert verdict(f"{PREFIX}{old}-100-bbbbbbbb@enrich-0", {100: 0.0}) == "predecessor"


def test_other_hosts_other_slots_ourselves_and_unknown_formats() -> None:
    assert verdict(f"{PREFIX}000001796170700500-99-bbbbbbbb@enrich-1", {}) == "ask-the-broker"
    assert verdict("p.copy.1#000001796170700500-99-bbbbbbbb@enrich-0", {}) == "other-slot"
    assert verdict(f"{PREFIX}{MINE_TEXT}", {}) == "self"
    assert verdict(f"{PREFIX}something-else", {}) == "twin"


def test_our_own_process_is_found_live_through_proc() -> None:
    started = twins.process_started_at(os.getpid())
    assert started is not None
    assert started <= time.time()
    assert twins.process_started_at(4_194_311) is None  # above any pid_max: no such process


def test_new_incarnations_carry_the_host_and_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "orders-enrich-3")
    parsed = Incarnation.parse(new_incarnation())
    assert parsed is not None
    assert parsed.host == "orders-enrich-3"
    assert parsed.pid == os.getpid()


class FakeAdmin:
    """Answers describe_consumer_groups with one scripted member list per call."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers

    def __call__(self, _config: dict[str, Any]) -> FakeAdmin:
        return self

    def describe_consumer_groups(self, groups: list[str], **_: Any) -> dict[str, Any]:
        ids = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        members = [SimpleNamespace(client_id=c, host="/10.0.0.9") for c in ids]
        description = SimpleNamespace(members=members)
        return {groups[0]: SimpleNamespace(result=lambda timeout: description)}  # noqa: ARG005


def refuse(answers: list[list[str]], started: dict[int, float], timeout_ms: int = 0) -> None:
    refuse_live_twin(
        KafkaSettings(bootstrap_servers="unused:9092"),
        group_id="p.copy",
        client_id=f"{PREFIX}{MINE_TEXT}",
        session_timeout_ms=timeout_ms,
        admin_factory=FakeAdmin(answers),
        started_at=started.get,
    )


def test_a_live_twin_on_this_host_is_refused_with_one_line_naming_it() -> None:
    twin = f"{PREFIX}000001796170700500-99-bbbbbbbb@enrich-0"
    with pytest.raises(TwinRunningError) as raised:
        refuse([[twin]], {99: 1796170700.0})
    message = str(raised.value)
    assert twin in message
    assert "10.0.0.9" in message
    assert "--take-over" in raised.value.hint


def test_a_member_on_another_host_that_leaves_is_taken_over_one_that_stays_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    remote = f"{PREFIX}000001796170700500-99-bbbbbbbb@enrich-9"
    refuse([[remote], [remote], []], {}, timeout_ms=60_000)  # left: no error
    monkeypatch.setattr(twins, "_SESSION_MARGIN_S", 0.0)
    with pytest.raises(TwinRunningError, match="is still in the group"):
        refuse([[remote]], {}, timeout_ms=0)


def test_a_killed_process_not_reaped_yet_is_not_running() -> None:
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while "Z" not in Path(f"/proc/{zombie.pid}/stat").read_text().split(")")[1][:3]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        assert twins.process_started_at(zombie.pid) is None
    finally:
        zombie.wait()
