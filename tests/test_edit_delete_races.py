"""Edit and delete of one message under its row lock (PROTOCOL sections 3 and 7, issue 10 item 6).

A tombstone must stay a tombstone: an edit racing a delete either lands before it (and the
tombstone keeps the edited text for staff) or is refused, and two deletes record one change.
Threads race on real connections, so this runs on PostgreSQL as on SQLite.
"""

import json
import threading
from functools import partial

import pytest
from django.db import connection

from chat import publisher, services
from chat.exceptions import Invalid
from chat.models import Membership, Message, Room
from tests.conftest import make_user

ROUNDS = 25


@pytest.fixture
def sent_frames(monkeypatch):
    """Every change frame a room got, recorded where the publisher takes it: after commit."""
    frames = []
    lock = threading.Lock()

    def record(item):
        if isinstance(item, publisher.GroupSend) and "text" in item.event:
            frame = json.loads(item.event["text"])
            if frame["type"] in ("message_updated", "message_deleted"):
                with lock:
                    frames.append(frame)

    monkeypatch.setattr(publisher, "hand_over", record)
    return frames


def _race(*calls):
    """Run every call at once in its own thread (and connection); returns each one's outcome."""
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            outcomes[index] = call()
        except Exception as exc:  # noqa: BLE001 — an outcome like any other, checked by the caller
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_edit_racing_deletes_never_leaves_text_on_a_tombstone(sent_frames, settings):
    settings.CHAT_POST_BURST = 1000  # one author posts every round's message; not what this tests
    author, moderator = make_user("author"), make_user("moderator")
    room = services.room_create(user=author, slug="lobby", name="Lobby")
    services.room_join(user=moderator, slug="lobby")
    Membership.objects.filter(room=room, user=moderator).update(role=Membership.Role.MODERATOR)

    for round_number in range(ROUNDS):
        message = services.message_create(user=author, to="lobby", content=f"original {round_number}").message
        outcomes = _race(
            partial(services.message_edit, user=author, message_id=message.pk, content="edited once"),
            partial(services.message_delete, user=author, message_id=message.pk),
            partial(services.message_edit, user=author, message_id=message.pk, content="edited twice"),
            partial(services.message_delete, user=moderator, message_id=message.pk),
        )
        for outcome in outcomes:
            # A refused edit is the only failure allowed: nothing deadlocks, nothing else breaks.
            assert isinstance(outcome, Message | Invalid), outcome

        message.refresh_from_db()
        mine = [frame for frame in sent_frames if frame["extra"]["id"] == message.pk]
        deleted = [frame for frame in mine if frame["type"] == "message_deleted"]
        updated = [frame for frame in mine if frame["type"] == "message_updated"]
        edits_done = sum(isinstance(outcome, Message) for outcome in (outcomes[0], outcomes[2]))
        assert message.is_deleted and message.content == "", round_number
        assert message.deleted_content in (f"original {round_number}", "edited once", "edited twice")
        assert len(deleted) == 1, (round_number, mine)
        assert len(updated) == edits_done, (round_number, mine)
        # The delete is the message's last change: no edit was recorded after it.
        assert deleted[0]["extra"]["change"] == message.change == max(f["extra"]["change"] for f in mine)

    # Every recorded change advanced the room's number once: gap-free and nothing extra.
    changes = sorted(frame["extra"]["change"] for frame in sent_frames)
    assert changes == list(range(1, len(changes) + 1))
    assert Room.objects.get(pk=room.pk).last_change == len(changes)


@pytest.mark.django_db(transaction=True)
def test_two_deletes_at_once_record_one_change(sent_frames):
    author, staff = make_user("author"), make_user("staff", is_staff=True)
    room = services.room_create(user=author, slug="lobby", name="Lobby")
    message = services.message_create(user=author, to="lobby", content="twice").message
    outcomes = _race(
        lambda: services.message_delete(user=author, message_id=message.pk),
        lambda: services.message_delete(user=staff, message_id=message.pk),
    )
    assert all(isinstance(outcome, Message) for outcome in outcomes), outcomes
    assert [frame["type"] for frame in sent_frames] == ["message_deleted"]
    assert Room.objects.get(pk=room.pk).last_change == 1


@pytest.mark.django_db(transaction=True)
def test_an_edit_after_a_delete_is_refused(sent_frames):
    author = make_user("author")
    room = services.room_create(user=author, slug="lobby", name="Lobby")
    message = services.message_create(user=author, to="lobby", content="soon gone").message
    services.message_delete(user=author, message_id=message.pk)
    with pytest.raises(Invalid):
        services.message_edit(user=author, message_id=message.pk, content="back from the dead")
    message.refresh_from_db()
    assert (message.content, message.deleted_content, message.edited_at) == ("", "soon gone", None)
    assert [frame["type"] for frame in sent_frames] == ["message_deleted"]
    assert Room.objects.get(pk=room.pk).last_change == 1
