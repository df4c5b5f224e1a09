"""Settings for the chat site, read from the environment (twelve-factor style).

Every name documented in the README is read here and nowhere else. With no environment at all
the site runs on the embedded default: an SQLite file under ``data/`` and an in-memory channel
layer (one process). ``DATABASE_URL`` switches to PostgreSQL and ``REDIS_URL`` to channels-redis,
after which any number of server processes share one chat.
"""

from pathlib import Path

import environ
import redis.exceptions
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / "data"

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# The development key is only ever used with DEBUG on; production must bring its own.
_DEV_SECRET_KEY = "django-insecure-dev-only-key-never-used-with-debug-off"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "accounts",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Axes last, as its docs require, so that it sees the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATA_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
}
# Persistent connections: without them every database_sync_to_async call opens a new one.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # libpq waits for a host that does not answer as long as TCP does (minutes): during an
    # outage every new connection, and so every write, would hang that long.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=2)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("DATABASE_POOL", default=True):
    # Under ASGI each request's sync code runs in a thread of its own, so a persistent
    # connection is never reused: a pool (psycopg_pool, Django 5.1+) is what keeps them warm.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # With the pool, CONN_HEALTH_CHECKS makes Django give it psycopg_pool's check_connection: an
    # empty query, a round trip on every checkout. Django offers no other check, so our backend
    # (Django's, plus one hook: chatsite/postgresql/base.py) gives the pool one that looks at the
    # idle socket instead: no query, and still no connection a restart or an outage closed is
    # handed out.
    DATABASES["default"]["ENGINE"] = "chatsite.postgresql"
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=2),
        "max_size": env.int("DATABASE_POOL_MAX", default=20),
        # How long a request waits for a connection before it fails (server_error, 4503). During
        # an outage the pool has none to give, so this is how soon every write answers; under
        # load, a wait this long means the pool is too small for the traffic anyway.
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=2.0),
        # A lost connection is re-made with a backoff (1, 2, 4 … s) for at most this long; then
        # its slot is freed and the next request that waits starts a fresh attempt. psycopg's 300 s
        # let the backoff grow past a minute, so a pool could stay empty that long after the
        # database came back.
        "reconnect_timeout": env.float("DATABASE_POOL_RECONNECT_TIMEOUT", default=10.0),
        # 0: no cap on waiting requests; the timeout already bounds each one's wait.
        "max_waiting": env.int("DATABASE_POOL_MAX_WAITING", default=0),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers go on while one writer commits; IMMEDIATE takes the write lock at
        # BEGIN, which is what makes seq allocation serial (SQLite has no SELECT ... FOR UPDATE).
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory: browser tests run the server in another process on the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Channel layer and cache -----------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# The cache holds the REST throttles' counts: in Redis they are shared by every process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
        # Retries a stale connection once after a Redis restart, like our own clients.
        "OPTIONS": {"pool_class": "chat.shared_state.RetryingConnectionPool"},
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
# pubsub (the default): one PUBLISH per group send, fanned out to the sockets in each process;
# groups are kept per process, so every socket joins its groups itself (chat.broadcast). At the
# same load it delivered S1 with nothing late where the core layer, which copies every event
# into a Redis list per socket, fell behind (docs/performance.md). "core" stays selectable.
CHANNEL_LAYER_KIND = env.str("CHANNEL_LAYER", default="pubsub")
if CHANNEL_LAYER_KIND not in ("pubsub", "core"):
    raise ImproperlyConfigured("CHANNEL_LAYER must be 'pubsub' or 'core'.")
if REDIS_URL and CHANNEL_LAYER_KIND == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL}],
                "prefix": env.str("CHANNEL_PREFIX", default="asgi"),
            },
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 gives up on a read after 5 s, exactly the layer's blocking-receive
                # wait: an idle socket's receive would then fail and close it (1011).
                "hosts": [{"address": REDIS_URL, "max_connections": 1000, "socket_timeout": 15}],
                "capacity": env.int("CHANNEL_CAPACITY", default=1000),
                "expiry": 60,
                "prefix": env.str("CHANNEL_PREFIX", default="asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env.int("CHANNEL_CAPACITY", default=1000)},
        }
    }

# --- Auth ------------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="chat@localhost")

# --- I18N, static, media ---------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
MEDIA_URL = "/files/"

# --- REST framework --------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Errors in the one JSON shape of PROTOCOL section 8, with the section 4 codes.
    "EXCEPTION_HANDLER": "chat.api.exceptions.api_exception_handler",
    # Reads (history paging) have their own generous budget; posting a message is limited by
    # the token bucket it shares with the socket (inside services.message_create), not here.
    "DEFAULT_THROTTLE_RATES": {"api_read": "1200/minute", "api_write": "300/minute"},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Chat API",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Content-Security-Policy (django-csp 4) --------------------------------------------------
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
    },
}

# --- Chat limits (PROTOCOL.md section 6) -----------------------------------------------------
CHAT_MAX_CONTENT = env.int("CHAT_MAX_CONTENT", default=4000)
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=256 * 1024)
CHAT_POST_BURST = env.int("CHAT_POST_BURST", default=10)
CHAT_POST_REFILL_PER_SECOND = env.float("CHAT_POST_REFILL_PER_SECOND", default=1.0)
CHAT_FLOOD_REFUSALS = env.int("CHAT_FLOOD_REFUSALS", default=20)
CHAT_FLOOD_WINDOW_SECONDS = env.float("CHAT_FLOOD_WINDOW_SECONDS", default=10.0)
CHAT_TYPING_INTERVAL_SECONDS = env.float("CHAT_TYPING_INTERVAL_SECONDS", default=2.0)
# A socket whose unread output grows by this much without draining once is closed with 4408.
CHAT_SLOW_READER_BYTES = env.int("CHAT_SLOW_READER_BYTES", default=1024 * 1024)
# How long a socket we close may take to answer the close frame before its connection is cut.
CHAT_CLOSE_HANDSHAKE_SECONDS = env.float("CHAT_CLOSE_HANDSHAKE_SECONDS", default=5.0)
# On SIGTERM, the most a process takes to finish its writes, close its sockets with 4503 and exit
# (chat/shutdown.py); keep the supervisor's stop timeout above it.
CHAT_SHUTDOWN_GRACE_SECONDS = env.float("CHAT_SHUTDOWN_GRACE_SECONDS", default=10.0)
CHAT_HISTORY_PAGE = 50
CHAT_REPLAY_MAX = 200
CHAT_MAX_UPLOAD_BYTES = env.int("CHAT_MAX_UPLOAD_BYTES", default=25 * 1024 * 1024)
CHAT_UPLOAD_CHUNK_BYTES = env.int("CHAT_UPLOAD_CHUNK_BYTES", default=64 * 1024)
CHAT_WS_TICKET_SECONDS = 60
# How often an open socket re-checks its session (Channels authenticates only at the handshake)
# and refreshes its presence entries.
CHAT_AUTH_RECHECK_SECONDS = env.float("CHAT_AUTH_RECHECK_SECONDS", default=15.0)
CHAT_PRESENCE_TTL_SECONDS = env.float("CHAT_PRESENCE_TTL_SECONDS", default=60.0)
# A room's user_list goes out this long after the first change that asks for it, covering every
# change meanwhile (a connect storm asks once per socket).
CHAT_PRESENCE_COALESCE_SECONDS = env.float("CHAT_PRESENCE_COALESCE_SECONDS", default=0.05)
# Prefix of our own Redis keys (presence, rate limits), beside the channel layer's.
CHAT_REDIS_KEY_PREFIX = env.str("CHAT_REDIS_KEY_PREFIX", default="chat:")

# --- Production hardening (active whenever DEBUG is off) -------------------------------------
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}

# --- Uploads (PROTOCOL.md section 5; docs/uploads.md) ----------------------------------------
# CHAT_MAX_UPLOAD_BYTES and CHAT_UPLOAD_CHUNK_BYTES are with the chat limits above.
CHAT_UPLOAD_MAX_UNFINISHED = env.int("CHAT_UPLOAD_MAX_UNFINISHED", default=3)
# Bytes a user may keep: their stored attachments plus the declared size of unfinished uploads.
CHAT_UPLOAD_QUOTA_BYTES = env.int("CHAT_UPLOAD_QUOTA_BYTES", default=1024 * 1024 * 1024)
# An unfinished upload expires this long after its last accepted chunk.
CHAT_UPLOAD_EXPIRY_SECONDS = env.int("CHAT_UPLOAD_EXPIRY_SECONDS", default=3600)
# Finished uploads are kept this long only so that a repeated file_end gets the first ack.
CHAT_UPLOAD_FINISHED_KEEP_SECONDS = env.int("CHAT_UPLOAD_FINISHED_KEEP_SECONDS", default=86400)
# Images over this many pixels are refused before Pillow decodes them (decompression bombs).
CHAT_UPLOAD_MAX_IMAGE_PIXELS = env.int("CHAT_UPLOAD_MAX_IMAGE_PIXELS", default=50_000_000)
CHAT_UPLOAD_THUMBNAIL_PX = env.int("CHAT_UPLOAD_THUMBNAIL_PX", default=320)
# Threads per process that run upload work (chunks, hashing, storing), apart from the chat's.
CHAT_UPLOAD_THREADS = env.int("CHAT_UPLOAD_THREADS", default=2)
# Threads for the socket side's reads (session re-checks, member lists, join history): they need
# no ordering, so they do not queue on the one thread that handles writes (chat/threads.py).
CHAT_READ_THREADS = env.int("CHAT_READ_THREADS", default=4)
# How often each process checks that the channel layer's Redis has lost no events (restart,
# flush, outage; chat/layer_watch.py): sockets hear of a loss (4503) within about twice this.
# The server process's GIL switch interval (chatsite/asgi.py); CPython's default is 0.005.
CHAT_GIL_SWITCH_SECONDS = env.float("CHAT_GIL_SWITCH_SECONDS", default=0.005)
CHAT_LAYER_WATCH_SECONDS = env.float("CHAT_LAYER_WATCH_SECONDS", default=2.0)
# Committed broadcasts that may wait for the channel layer in one process before new ones are
# dropped (logged; clients find dropped events by seq).
CHAT_BROADCAST_QUEUE_MAX = env.int("CHAT_BROADCAST_QUEUE_MAX", default=100_000)
# Group commit of the socket door's posts (chat/post_queue.py): at most this many posts per
# transaction, and at most this many waiting before new posts are refused with rate_limited.
CHAT_POST_BATCH_MAX = env.int("CHAT_POST_BATCH_MAX", default=200)
CHAT_POST_QUEUE_MAX = env.int("CHAT_POST_QUEUE_MAX", default=2000)
# How files leave the server: "django" (streamed by Django), "x-accel-redirect" (nginx) or
# "x-sendfile" (Apache mod_xsendfile, lighttpd). The web server then reads the file itself.
CHAT_FILES_SERVE = env.str("CHAT_FILES_SERVE", default="django")
# The internal nginx location that maps to MEDIA_ROOT (x-accel-redirect only).
CHAT_FILES_ACCEL_PREFIX = env.str("CHAT_FILES_ACCEL_PREFIX", default="/protected-files/")
# A separate origin for user files (e.g. "https://files.example-usercontent.net"): after the
# membership check, /files/ redirects there with a signed URL valid for this many seconds.
# The session cookie never travels there, and a file that escaped its headers runs on an
# origin that holds nothing.
CHAT_FILES_ORIGIN = env.str("CHAT_FILES_ORIGIN", default="")
CHAT_FILES_SIGNED_SECONDS = env.int("CHAT_FILES_SIGNED_SECONDS", default=300)
if CHAT_FILES_ORIGIN:
    # The page shows thumbnails through /files/, which then redirects there: CSP checks the
    # redirect's target too, so images from that origin must be allowed.
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["img-src"].append(CHAT_FILES_ORIGIN.rstrip("/"))
if CHAT_FILES_SERVE not in ("django", "x-accel-redirect", "x-sendfile"):
    raise ImproperlyConfigured("CHAT_FILES_SERVE must be 'django', 'x-accel-redirect' or 'x-sendfile'.")

# --- Health and metrics (chat/health.py, chat/metrics.py) ------------------------------------
# /metrics is readable by staff, and by whoever sends "Authorization: Bearer <this>" (unset:
# staff only). Each server process serves its own metrics.
CHAT_METRICS_TOKEN = env.str("CHAT_METRICS_TOKEN", default="")
# How long /readyz waits for the database and for Redis, each (PostgreSQL counts whole seconds,
# at least 2).
CHAT_READY_TIMEOUT_SECONDS = env.float("CHAT_READY_TIMEOUT_SECONDS", default=2.0)
# Probes come over plain HTTP from inside the deploy: answer them there rather than redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# After a Redis restart every pooled connection of the channel layer is dead without knowing it
# (redis-py's asyncio pool does not look at it when handing it out): one retry on a fresh one,
# as chat/shared_state.py does for its own clients, instead of a failed send or 4503 per
# connection. redis-py's pools retry nothing unless asked.
for _host in CHANNEL_LAYERS["default"]["CONFIG"].get("hosts", []):
    if isinstance(_host, dict):
        _host.setdefault("retry_on_error", [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError])
