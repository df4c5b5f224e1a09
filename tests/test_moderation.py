"""Moderation over the socket: who may act, and what each action does to the room."""

import pytest
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Membership, Message, ModerationLog, Room
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def setup():
    owner, mod, member = make_user("owner"), make_user("mod"), make_user("member")
    services.room_create(user=owner, slug="lobby", name="Lobby")
    services.room_join(user=member, slug="lobby")
    services.room_join(user=mod, slug="lobby")
    Membership.objects.filter(user=mod).update(role="moderator")
    return owner, mod, member


def moderate(action, **extra):
    return {"type": "moderate", "to": "lobby", "extra": {"action": action, **extra}}


async def test_members_cannot_moderate(connect):
    owner, mod, member = await setup()
    m = await connect(member)
    await m.send(moderate("lock"))
    error = await m.expect("error")
    assert error["extra"]["code"] == "forbidden" and error["extra"]["requestType"] == "moderate"
    await m.send(moderate("mute", user="owner"))
    assert (await m.expect("error"))["extra"]["code"] == "forbidden"


async def test_mute_refuses_posts_with_retry_after_until_unmute(connect):
    owner, mod, member = await setup()
    moderator, target = await connect(mod), await connect(member)
    await moderator.send(moderate("mute", user="member", seconds=60, reason="cool off"))
    answer = await moderator.expect("moderated")
    assert answer["extra"]["action"] == "mute" and answer["extra"]["user"] == "member"
    assert (await target.expect("moderated"))["extra"]["action"] == "mute"
    await target.send({"type": "message", "to": "lobby", "content": "let me speak", "messageId": "m1"})
    error = await target.expect("error")
    assert error["extra"]["code"] == "forbidden" and 55_000 < error["extra"]["retryAfterMs"] <= 60_000
    await moderator.send(moderate("unmute", user="member"))
    await target.expect("moderated")
    await target.send({"type": "message", "to": "lobby", "content": "thanks", "messageId": "m2"})
    assert (await target.expect("ack"))["messageId"] == "m2"
    assert not [f for f in target.received if f["type"] == "room_updated"]


async def test_kick_and_ban_end_membership_with_system_messages(connect):
    owner, mod, member = await setup()
    moderator, target = await connect(mod), await connect(member)
    await moderator.send(moderate("kick", user="member", reason="spam"))
    removed = await target.expect("room_removed")
    assert removed["extra"]["reason"] == "kicked"
    system = await moderator.expect("message")
    assert system["extra"]["kind"] == "system" and "member" in system["content"]
    # kicked users may come back to a public room; banned users may not
    await target.send({"type": "join_room", "roomId": "lobby"})
    await target.expect("history")
    await moderator.send(moderate("ban", user="member"))
    assert (await target.expect("room_removed"))["extra"]["reason"] == "banned"
    await target.send({"type": "join_room", "roomId": "lobby"})
    assert (await target.expect("error"))["extra"]["code"] == "forbidden"
    await moderator.send(moderate("unban", user="member"))
    while (await moderator.expect("moderated"))["extra"]["action"] != "unban":
        pass
    await target.send({"type": "join_room", "roomId": "lobby"})
    await target.expect("history")
    actions = await sync_to_async(lambda: list(ModerationLog.objects.values_list("action", flat=True)))()
    assert sorted(actions) == ["ban", "kick", "unban"]


async def test_moderators_cannot_touch_owners(connect):
    owner, mod, member = await setup()
    moderator = await connect(mod)
    await moderator.send(moderate("ban", user="owner"))
    assert (await moderator.expect("error"))["extra"]["code"] == "forbidden"


async def test_lock_slow_mode_and_topic_update_the_room(connect, settings):
    owner, mod, member = await setup()
    o, m = await connect(owner), await connect(member)
    await o.send(moderate("lock"))
    updated = await m.expect("room_updated")
    assert updated["extra"] == {"topic": "", "locked": True, "slowMode": 0}
    assert (await m.expect("message"))["extra"]["kind"] == "system"
    await m.send({"type": "message", "to": "lobby", "content": "hello?", "messageId": "l1"})
    assert (await m.expect("error"))["extra"]["code"] == "forbidden"
    await o.send(moderate("unlock"))
    await m.expect("room_updated")
    await o.send(moderate("slow_mode", seconds=30))
    assert (await m.expect("room_updated"))["extra"]["slowMode"] == 30
    await m.send({"type": "message", "to": "lobby", "content": "one", "messageId": "s1"})
    await m.expect("ack")
    await m.send({"type": "message", "to": "lobby", "content": "two", "messageId": "s2"})
    error = await m.expect("error")
    assert error["extra"]["code"] == "rate_limited" and error["extra"]["retryAfterMs"] > 25_000
    await o.send(moderate("topic", topic="Be kind"))
    assert (await m.expect("room_updated"))["extra"]["topic"] == "Be kind"
    room = await sync_to_async(Room.objects.get)(slug="lobby")
    assert (room.topic, room.slow_mode_seconds, room.locked) == ("Be kind", 30, False)


async def test_report_goes_to_the_queue_and_nothing_is_broadcast(connect):
    owner, mod, member = await setup()
    message = (await sync_to_async(services.message_create)(user=owner, to="lobby", content="hmm")).message
    reporter, other = await connect(member), await connect(mod)
    await other.drain()
    await reporter.send({"type": "report", "extra": {"id": message.pk, "reason": "rude"}})
    assert (await reporter.expect("reported"))["extra"]["id"] == message.pk
    assert await other.nothing()
    entry = await sync_to_async(ModerationLog.objects.get)(action="report")
    assert entry.target_message_id == message.pk and entry.reason == "rude"
    assert await sync_to_async(Message.objects.count)() == 1


async def test_staff_moderate_private_rooms_they_are_not_in(connect):
    owner, mod, member = await setup()
    staff = await sync_to_async(make_user)("staff", is_staff=True)
    await sync_to_async(services.room_create)(user=owner, slug="hideout", name="Hideout", kind="private")
    s = await connect(staff)
    await s.send({"type": "moderate", "to": "hideout", "extra": {"action": "lock"}})
    assert (await s.expect("moderated"))["extra"]["action"] == "lock"
    assert await sync_to_async(lambda: Room.objects.get(slug="hideout").locked)()


async def test_rest_moderation_and_report_reach_the_sockets(connect):
    from rest_framework.test import APIClient

    owner, mod, member = await setup()
    target = await connect(member)
    await target.drain()

    @sync_to_async
    def post(user, path, body):
        client = APIClient()
        client.force_authenticate(user)
        return client.post(path, body, format="json")

    muted = await post(mod, "/api/rooms/lobby/moderation/", {"action": "mute", "user": "member", "seconds": 30})
    assert muted.status_code == 200 and muted.json()["action"] == "mute" and muted.json()["until"]
    assert (await target.expect("moderated"))["extra"]["user"] == "member"
    refused = await post(member, "/api/rooms/lobby/moderation/", {"action": "lock"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    bad = await post(mod, "/api/rooms/lobby/moderation/", {"action": "explode"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    locked = await post(owner, "/api/rooms/lobby/moderation/", {"action": "lock"})
    assert locked.status_code == 200
    assert (await target.expect("room_updated"))["extra"]["locked"] is True
    message = (await sync_to_async(services.message_create)(user=owner, to="lobby", content="hm")).message
    reported = await post(member, f"/api/messages/{message.pk}/report/", {"reason": "spam"})
    assert reported.status_code == 201
    assert await sync_to_async(ModerationLog.objects.filter(action="report", reason="spam").count)() == 1
    stranger = await sync_to_async(make_user)("stranger")
    hidden = await post(stranger, f"/api/messages/{message.pk}/report/", {"reason": "x"})
    assert hidden.status_code == 404
