"""Demo data for a first run: rooms ``lobby`` and ``random``, two users and one staff user."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import User
from chat import services
from chat.models import Room

DEMO_USERS = [
    # username, display name, password, staff
    ("alice", "Alice", "alice-demo-pass", False),
    ("bob", "Bob", "bob-demo-pass", False),
    ("admin", "Admin", "admin-demo-pass", True),
]
DEMO_ROOMS = [("lobby", "Lobby", "Say hello"), ("random", "Random", "Anything goes")]


class Command(BaseCommand):
    help = "Create demo rooms and users (idempotent; development only)."

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo only runs with DEBUG on: it creates known passwords.")
        with transaction.atomic():
            users = {}
            for username, display_name, password, staff in DEMO_USERS:
                user, created = User.objects.get_or_create(username=username, defaults={"display_name": display_name})
                if created:
                    user.set_password(password)
                    user.is_staff = user.is_superuser = staff
                    user.save()
                users[username] = user
            for slug, name, topic in DEMO_ROOMS:
                if not Room.objects.filter(slug=slug).exists():
                    services.room_create(user=users["admin"], slug=slug, name=name, topic=topic)
                for username in ("alice", "bob"):
                    services.room_join(user=users[username], slug=slug)
        self.stdout.write("Demo rooms: lobby, random")
        for username, _, password, staff in DEMO_USERS:
            role = " (staff, /admin/)" if staff else ""
            self.stdout.write(f"  {username} / {password}{role}")
