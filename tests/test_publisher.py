"""The publisher's rounds (chat/publisher.py): a room's consecutive messages become one event,
in order; jobs between them keep their place."""

from chat import publisher
from chat.publisher import GroupSend


def frame(group: str, text: str) -> GroupSend:
    return GroupSend(group, {"type": "chat.frame", "text": text})


def test_a_rooms_consecutive_frames_become_one_event_in_order():
    merged = publisher._merged(
        [frame("room.1", "a"), frame("room.2", "b"), frame("room.1", "c"), GroupSend("user.5", {"type": "chat.close"})]
    )
    assert merged == [
        GroupSend(
            "room.1",
            {
                "type": "chat.frames",
                "events": [{"type": "chat.frame", "text": "a"}, {"type": "chat.frame", "text": "c"}],
            },
        ),
        GroupSend("room.2", {"type": "chat.frame", "text": "b"}),
        GroupSend("user.5", {"type": "chat.close"}),
    ]


def test_jobs_split_a_round_into_runs_that_keep_their_order():
    async def job():
        return None

    items = [frame("room.1", "a"), job, frame("room.1", "b"), frame("room.1", "c")]
    runs = publisher._runs(items)
    assert runs[0] == [items[0]] and runs[1] is job and runs[2] == items[2:]
