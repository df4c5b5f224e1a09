"""Settings for the test suite: the real settings, with the values a test run needs.

The environment still decides the database and the channel layer (``DATABASE_URL``,
``REDIS_URL``), so the same suite runs on the embedded default and on PostgreSQL + Redis.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
# Several test runs may share this machine's PostgreSQL and Redis at once: each run (and the
# server subprocesses it starts, which inherit the environment) gets its own database and keys.
os.environ.setdefault("TEST_RUN_ID", str(os.getpid()))
TEST_RUN_ID = os.environ["TEST_RUN_ID"]

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
AXES_ENABLED = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-db-{TEST_RUN_ID}.sqlite3")}  # noqa: F405
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{TEST_RUN_ID}"}  # noqa: F405
CHAT_REDIS_KEY_PREFIX = f"chat-test-{TEST_RUN_ID}:"
if REDIS_URL:  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"chat-test-{TEST_RUN_ID}"  # noqa: F405
CHAT_AUTH_RECHECK_SECONDS = 0.5
# Close connections after each use so the test database can be dropped at the end.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# Serve static files from the app folders, as with DEBUG on (no collectstatic in tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# One process per test run: its throttle counts may live in its memory (and cache.clear() in a
# test must not flush a Redis database).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
