"""An action's key, row and events, as they are made before the store keeps them: the key the
same whoever plans it and however often, one per (kind, dispatch, site, episode) and per store;
a row open or final by its state; an event per state. (Recording them:
tests/store/test_processor.py.)"""

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.act.actions import FINAL, event, idempotency_key, new_row, row_event
from etl.base.vocabulary import ActionState, EventKind
from etl.handlers import ActionKind

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
STORE = uuid.UUID("6f1c0ad2-8b31-4b59-9a39-0d1c2e2f3a4b")

ids = st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=6)
actions = st.tuples(st.sampled_from(["curtail", "restore"]), ids, ids, st.integers(1, 5))


def test_a_first_episodes_key_is_the_one_etl_gave_before_it_counted_episodes() -> None:
    before_episodes = str(uuid.uuid5(STORE, "curtail\x00d1\x00s1"))
    assert idempotency_key(STORE, "d1", "s1", "curtail") == before_episodes
    assert idempotency_key(STORE, "d1", "s1", "curtail", 1) == before_episodes
    assert idempotency_key(STORE, "d1", "s1", "curtail", 2) != before_episodes


@given(st.lists(actions, min_size=2, max_size=6, unique=True))
def test_each_action_has_its_own_key_and_the_same_one_every_time(
    planned: list[tuple[str, str, str, int]],
) -> None:
    keys = [idempotency_key(STORE, d, s, kind, episode) for kind, d, s, episode in planned]
    assert len(set(keys)) == len(keys)
    again = [idempotency_key(STORE, d, s, kind, episode) for kind, d, s, episode in planned]
    assert again == keys and all(uuid.UUID(key).version == 5 for key in keys)


@given(actions, st.uuids())
def test_no_other_store_gives_an_action_the_same_key(
    action: tuple[str, str, str, int], other: uuid.UUID
) -> None:
    kind, dispatch_id, site_id, episode = action
    here = idempotency_key(STORE, dispatch_id, site_id, kind, episode)
    assert (idempotency_key(other, dispatch_id, site_id, kind, episode) == here) is (other == STORE)


@pytest.mark.parametrize("state", list(ActionState))
def test_a_row_is_due_when_pending_and_finished_when_final(state: ActionState) -> None:
    row = new_row("d1", "s1", ActionKind.CURTAIL, 2, state, NOW, "why")
    assert row["available_at"] == (NOW if state == ActionState.PENDING else None)
    assert row["finished_at"] == (NOW if state in FINAL else None)
    assert (row["attempts"], row["episode"], row["note"], row["created_at"]) == (0, 2, "why", NOW)


@pytest.mark.parametrize("state", list(ActionState))
def test_each_state_is_an_event_of_its_own_and_pending_or_waiting_is_planned(
    state: ActionState,
) -> None:
    made = event(ActionKind.RESTORE, "d1", "s1", 3, "k", state, note=None, attempt=2)
    planned = state in (ActionState.PENDING, ActionState.WAITING)
    assert made.kind == (EventKind.ACTION_PLANNED if planned else EventKind(f"action_{state}"))
    assert made.details == {
        "action": "restore",
        "episode": 3,
        "idempotency_key": "k",
        "state": str(state),
        "attempt": 2,  # the details given, but no empty one
    }
    assert (made.dispatch_id, made.site_id) == ("d1", "s1")


def test_a_rows_event_carries_its_key_and_note() -> None:
    row = new_row("d1", "s1", ActionKind.CURTAIL, 1, ActionState.SKIPPED, NOW, "test dispatch")
    made = row_event({**row, "idempotency_key": "k1"})
    assert made.kind == EventKind.ACTION_SKIPPED
    assert made.details["note"] == "test dispatch" and made.details["idempotency_key"] == "k1"
