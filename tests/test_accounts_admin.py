"""Accounts (signup, login, logout, throttled failures), the admin, and production settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from accounts.models import User
from chat import services
from chat.models import Message
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def test_signup_creates_the_user_and_logs_them_in(client):
    response = client.post(
        "/accounts/signup/",
        {
            "username": "newbie",
            "display_name": "New Bie",
            "password1": "a-long-pass-phrase",
            "password2": "a-long-pass-phrase",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(username="newbie")
    assert user.display_name == "New Bie"
    assert client.get("/").status_code == 200


def test_signup_refuses_mismatched_passwords(client):
    response = client.post(
        "/accounts/signup/", {"username": "x", "password1": "a-long-pass-phrase", "password2": "another-one-entirely"}
    )
    assert response.status_code == 200 and not User.objects.filter(username="x").exists()


def test_login_logout_and_bad_password(client):
    make_user("alice")
    assert client.get("/").status_code == 302  # anonymous users go to the login page
    assert client.get("/").url.startswith("/accounts/login/")
    bad = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert bad.status_code == 200 and "_auth_user_id" not in client.session
    good = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert good.status_code == 302 and client.session["_auth_user_id"]
    assert client.get("/").status_code == 200
    assert client.get("/accounts/logout/").status_code == 405  # logout is POST only
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_repeated_failed_logins_are_locked_out(client, settings):
    make_user("alice")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    locked = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_password_pages_render(client):
    assert client.get("/accounts/password_reset/").status_code == 200
    user = make_user("alice")
    client.force_login(user)
    assert client.get("/accounts/password_change/").status_code == 200


@pytest.fixture
def staff_client(client):
    staff = make_user("staff", is_staff=True, is_superuser=True)
    client.force_login(staff)
    return client, staff


def test_every_admin_list_page_renders(staff_client):
    client, staff = staff_client
    room = services.room_create(user=staff, slug="lobby", name="Lobby")
    services.message_create(user=staff, to="lobby", content="hello")
    from django.contrib import admin

    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert client.get(url).status_code == 200, url
    assert client.get(reverse("admin:chat_room_change", args=[room.pk])).status_code == 200


def test_admin_delete_leaves_a_tombstone(staff_client):
    client, staff = staff_client
    services.room_create(user=staff, slug="lobby", name="Lobby")
    message = services.message_create(user=staff, to="lobby", content="rude").message
    response = client.post(
        reverse("admin:chat_message_changelist"),
        {"action": "delete_as_moderator", "_selected_action": [message.pk]},
    )
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.deleted_at is not None and message.content == "" and message.deleted_content == "rude"
    assert Message.objects.count() == 1


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DEBUG": "false",
        "SECRET_KEY": "prod-" + "k3y-" * 16,
        "ALLOWED_HOSTS": "chat.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "chatsite.settings", "DEBUG": "false"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_seed_demo_is_idempotent_and_refuses_without_debug(settings):
    from django.core.management import CommandError, call_command

    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo")
    settings.DEBUG = True
    call_command("seed_demo")
    call_command("seed_demo")
    assert set(User.objects.values_list("username", flat=True)) == {"alice", "bob", "admin"}
    assert User.objects.get(username="admin").is_staff
    assert User.objects.get(username="alice").check_password("alice-demo-pass")
