"""ualign settings: one file, read from the environment, with local defaults.

Every variable is documented in `.env.example`. With nothing set, ualign runs on embedded
defaults (an SQLite file and a filesystem Celery broker under `var/`), which is what the
README's main command uses on a fresh machine. Tests and deployments set DATABASE_URL to
PostgreSQL and REDIS_URL to a Redis server.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# Where the embedded defaults keep their state (SQLite file, broker folders, model cache).
VAR_DIR = Path(env_str("UALIGN_VAR_DIR", str(BASE_DIR / "var")))

DEV_SECRET_KEY = "dev-insecure-ualign-secret-key-change-me"
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY: the development default is refused when DEBUG is off.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "csp",
    "axes",  # throttles the admin's login (AXES_* below)
    "django_htmx",
    "template_partials",
    "studies",  # its tasks.py holds the Celery tasks; `workers` is plain libraries, not an app
]

MIDDLEWARE = [
    # Before anything reads the body: oversized or unsized bodies are refused from their headers
    # (ualign_web/limits.py; UALIGN_MAX_REQUEST_BYTES, UALIGN_ANNOTATOR_MAX_REQUEST_BYTES).
    "ualign_web.limits.BodyLimitMiddleware",
    # Then: load-balancer probes are answered before host validation and the HTTPS redirect.
    "ualign_web.health.HealthProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the collected, hashed and compressed STATIC_ROOT (or the finders under DEBUG).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # A job that could not be queued (the broker is down): a 503 saying nothing was started.
    "ualign_web.errors.QueueUnavailableMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "ualign_web.urls"
WSGI_APPLICATION = "ualign_web.wsgi.application"

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
            ],
        },
    },
]

# https://github.com/jazzband/dj-database-url
# Connections: DB_CONN_MAX_AGE seconds of reuse per web worker (0: one per request; 60 or so in
# production, and behind PgBouncer), checked before reuse (DB_CONN_HEALTH_CHECKS) so a restarted
# database or pooler costs one reconnect, not an error. docs/deployment.md explains the choices.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'ualign.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
        conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", True),
    )
}
# DB_PGBOUNCER=true: DATABASE_URL points at PgBouncer in transaction mode, where a server
# connection serves one transaction at a time. Server-side cursors (iterator() outside a
# transaction) would be lost between transactions, so Django uses client-side ones; and PgBouncer
# refuses the `options` startup parameter, so the statement timeout is set on the database role
# instead (ALTER ROLE ... SET statement_timeout). Django's psycopg 3 backend binds parameters on
# the client, so the ORM's statements are never prepared.
# https://docs.djangoproject.com/en/5.2/ref/databases/#transaction-pooling-server-side-cursors
DB_PGBOUNCER = env_bool("DB_PGBOUNCER", False)
# DB_PREPARED_STATEMENTS: the annotator's hot path (studies/judgment/sql.py, and nothing else)
# prepares its statements on PostgreSQL and runs their generic plans (plan_cache_mode below), so
# each is planned once per connection instead of once per pick. Behind PgBouncer only from 1.21
# on, with max_prepared_statements set and plan_cache_mode set on the role (docs/deployment.md),
# hence off there unless asked for.
UALIGN_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", not DB_PGBOUNCER)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool("DB_DISABLE_SERVER_SIDE_CURSORS", DB_PGBOUNCER)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that hangs must not hang the site: give up connecting after DB_CONNECT_TIMEOUT
    # seconds, and let PostgreSQL cancel any statement that runs past DB_STATEMENT_TIMEOUT_MS
    # (default: gunicorn's 30 s worker timeout, after which the request is lost anyway; 0 = none).
    # The request then fails with OperationalError, which ualign_web.errors answers with a 503.
    # https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-CONNECT-TIMEOUT
    DATABASES["default"].setdefault("OPTIONS", {}).update({"connect_timeout": env_int("DB_CONNECT_TIMEOUT", 5)})
    # Django's backend, plus the cursors that prepare the hot path's statements (ualign_web/db_backend).
    DATABASES["default"]["ENGINE"] = "ualign_web.db_backend"
    if UALIGN_PREPARED_STATEMENTS:
        # Django turns psycopg's prepared statements off (prepare_threshold None) for poolers' sake;
        # only the hot path's cursors (server-side binding, `preparing_cursor`) ever prepare: the
        # ORM's bind on the client, which psycopg never prepares, whatever the threshold.
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5
    if not DB_PGBOUNCER:
        DATABASES["default"]["OPTIONS"]["options"] = (
            f"-c statement_timeout={env_int('DB_STATEMENT_TIMEOUT_MS', 30_000)}"
            # Only prepared statements have plans to cache, and only the hot path prepares.
            + (" -c plan_cache_mode=force_generic_plan" if UALIGN_PREPARED_STATEMENTS else "")
        )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server and the worker write to one file: wait for the lock instead of failing,
    # take it at the start of each transaction, and let readers run beside a writer (WAL).
    # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-notes
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# With DEBUG off, `manage.py collectstatic` writes hashed, compressed copies to STATIC_ROOT and
# WhiteNoise serves them from the web process with far-future cache headers (no nginx needed).
# With DEBUG on (and in the tests) the files come straight from the finders.
# https://whitenoise.readthedocs.io/en/stable/django.html
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
if DEBUG:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one

# --- HTTPS and security headers -------------------------------------------------------------
# Defaults are the production ones whenever DEBUG is off; each can be overridden from the env.
# https://docs.djangoproject.com/en/5.2/ref/middleware/#module-django.middleware.security
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# ualign runs behind a proxy that terminates TLS and sets X-Forwarded-Proto (and strips any the
# client sent). Turn this off if gunicorn faces the internet directly.
if env_bool("TRUST_X_FORWARDED_PROTO", not DEBUG):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Asking browsers to preload HSTS is a commitment for the whole domain that its owner makes,
    # not a default of this app: set SECURE_HSTS_PRELOAD=true to opt in.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp), one policy for every page, the admin included. Every
# script and style is a file under /static/: no 'unsafe-inline', no 'unsafe-eval', no other
# origin; htmx is told not to inject its indicator <style> (templates/htmx.html). Django 5.2's
# admin needs no exception: its templates load every script from a file (data in data-
# attributes) and its JS sets styles through the CSSOM, which CSP allows. Its one inline <style>
# (admin/change_list.html) appears only on a ModelAdmin with actions_on_top and _bottom both
# off, which ualign has none of. tests/test_browser_csp.py walks the admin in Chromium and fails
# on any violation; a new admin page that needs inline code shows up there.
# https://django-csp.readthedocs.io/en/latest/configuration.html
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    },
}
# Uploads (prompt files, utility CSVs) are read in memory and validated; cap their size.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
UALIGN_MAX_UPLOAD_BYTES = env_int("UALIGN_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
# Request bodies are refused (413) from their Content-Length before they are read: anywhere above
# the largest upload plus 1 MiB of multipart envelope, and on the anonymous annotator's pages
# (/s/...) above 256 KiB (a pick with the longest rationale is at most about 60 KB; an over-long
# one still gets the form's own message). ualign_web/limits.py
UALIGN_MAX_REQUEST_BYTES = env_int("UALIGN_MAX_REQUEST_BYTES", UALIGN_MAX_UPLOAD_BYTES + 1024 * 1024)
UALIGN_ANNOTATOR_MAX_REQUEST_BYTES = env_int("UALIGN_ANNOTATOR_MAX_REQUEST_BYTES", 256 * 1024)

LOGIN_URL = "admin:login"

# --- Login throttling (django-axes, docs/security.md) -----------------------------------------
# After UALIGN_LOGIN_FAILURE_LIMIT wrong passwords for one username from one client address, that
# pair is locked out (429, even with the right password) for UALIGN_LOGIN_COOLOFF_MINUTES; other
# addresses can still log in as that user, so a stranger can't lock a researcher out. A success
# resets the count. Failures are counted in the database (AxesDatabaseHandler), shared by every
# web worker. https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("UALIGN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("UALIGN_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "ualign_web.login_throttle.client_ip"  # honours UALIGN_TRUSTED_PROXY_HOPS

# /readyz gives up on the database or the broker after this many seconds.
UALIGN_READY_TIMEOUT = env_int("UALIGN_READY_TIMEOUT", 2)

# --- Participant identity and hostile input (docs/security.md) --------------
# A participant's browser holds a signed, HttpOnly cookie naming them, valid this many days.
UALIGN_PARTICIPANT_COOKIE_DAYS = env_int("UALIGN_PARTICIPANT_COOKIE_DAYS", 30)
# New participants one client (IP address; IPv6 by /64) may create in one study per window;
# 0 turns the limit off. Raise it for lab sessions where many people share one address.
UALIGN_JOIN_LIMIT = env_int("UALIGN_JOIN_LIMIT", 20)
UALIGN_JOIN_WINDOW_SECONDS = env_int("UALIGN_JOIN_WINDOW_SECONDS", 3600)
# Reverse proxies in front of ualign that append to X-Forwarded-For (0: use the socket's address).
UALIGN_TRUSTED_PROXY_HOPS = env_int("UALIGN_TRUSTED_PROXY_HOPS", 0)
# Prompt imports: at most this many rows and bytes (UALIGN_MAX_UPLOAD_BYTES); files larger than
# UALIGN_IMPORT_BACKGROUND_BYTES are imported by a worker, with progress, instead of in the request.
UALIGN_IMPORT_MAX_ROWS = env_int("UALIGN_IMPORT_MAX_ROWS", 100_000)
# Candidate imports (studies/candidate_import.py): distinct candidates per prompt.
UALIGN_IMPORT_MAX_CANDIDATES = env_int("UALIGN_IMPORT_MAX_CANDIDATES", 1000)
UALIGN_IMPORT_BACKGROUND_BYTES = env_int("UALIGN_IMPORT_BACKGROUND_BYTES", 1024 * 1024)
# The longest cell of an imported CSV (prompt text included), in characters.
UALIGN_IMPORT_MAX_FIELD_CHARS = env_int("UALIGN_IMPORT_MAX_FIELD_CHARS", 100_000)
# The deepest nesting accepted in imported JSON (prompt metadata).
UALIGN_JSON_MAX_DEPTH = env_int("UALIGN_JSON_MAX_DEPTH", 20)

# --- Results at scale (studies/estimate/results_cache.py, issue #14) ---------------------------------
# Results of studies with at most this many judgments are recomputed inside the request when new
# judgments arrived; larger ones are served from their last snapshot while a worker recomputes.
UALIGN_RESULTS_INLINE_MAX_JUDGMENTS = env_int("UALIGN_RESULTS_INLINE_MAX_JUDGMENTS", 20_000)
# At most one background recomputation per study and origin is queued in this many seconds.
UALIGN_RESULTS_REFRESH_SECONDS = env_int("UALIGN_RESULTS_REFRESH_SECONDS", 300)

# --- Celery -------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
REDIS_URL = env_str("REDIS_URL", "")
BROKER_DIR = VAR_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
else:
    # Kombu's filesystem transport needs no server, so the main job runs a real worker
    # process on a fresh machine. https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.filesystem.html
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Kombu's transport with an atomic publish: its own can hand the worker a half-written
    # message, which stops the worker (ualign_web/broker.py says how).
    CELERY_BROKER_TRANSPORT = "ualign_web.broker:Transport"
    for _folder in ("queue", "processed", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis redelivers an unacked task after this many seconds; job rows make that safe.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# JSON only: tasks take ids, never pickled objects.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# No result backend: Job rows hold the state.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Ack after the task ran, and requeue when the worker process dies; the job row's claim
# makes a redelivered task safe, and its attempts counter stops a poison loop.
# https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.acks_late
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# A broker that restarts (an upgrade, a failover) must not drop a step's hand-off to the next:
# publishing retries for about 20 s (0+1+2+3+4+4+4+4), less than gunicorn's request timeout.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-publish-retry-policy
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 8, "interval_start": 0, "interval_step": 1, "interval_max": 4}
# Steps that run language models (sampling the pool; persona judges, embedders and reward
# models scoring it) need the accelerator; fitting, items and the rest run on the default queue.
CELERY_TASK_ROUTES = {
    "studies.tasks.generate_*": {"queue": "gpu"},
    "studies.tasks.build_populations": {"queue": "gpu"},
    "studies.tasks.train_doctors": {"queue": "gpu"},
}
# Periodic tasks for `celery beat` (serve-prod and `manage.py serve` run it).
# https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html
# The sweep gives back the seats and assignments of participants idle past their study's
# assignment_timeout, every UALIGN_SWEEP_SECONDS (0 turns it off). A sweep nobody ran before the
# next one is due expires, so a stopped worker doesn't come back to a backlog of them.
UALIGN_SWEEP_SECONDS = env_int("UALIGN_SWEEP_SECONDS", 60)
CELERY_BEAT_SCHEDULE: dict = (
    {
        "sweep-abandoned": {
            "task": "studies.tasks.sweep_abandoned",
            "schedule": float(UALIGN_SWEEP_SECONDS),
            "options": {"expires": float(UALIGN_SWEEP_SECONDS)},
        }
    }
    if UALIGN_SWEEP_SECONDS > 0
    else {}
)
# The adaptive allocation (issue #22) rewrites the item priorities of live studies that have it on
# every UALIGN_ALLOCATION_SECONDS (0 turns it off); like the sweep, a run nobody took expires.
UALIGN_ALLOCATION_SECONDS = env_int("UALIGN_ALLOCATION_SECONDS", 60)
if UALIGN_ALLOCATION_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["allocate-judgments"] = {
        "task": "studies.tasks.allocate_judgments",
        "schedule": float(UALIGN_ALLOCATION_SECONDS),
        "options": {"expires": float(UALIGN_ALLOCATION_SECONDS)},
    }
# The pre-registered questions' stopping rule (issue #22): every UALIGN_QUESTION_SECONDS (0 turns it
# off), each live study's question is answered from its judgments; an answered one is recorded and,
# if the question says so, its study paused. How late a stop can be is this interval.
UALIGN_QUESTION_SECONDS = env_int("UALIGN_QUESTION_SECONDS", 60)
if UALIGN_QUESTION_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["check-questions"] = {
        "task": "studies.tasks.check_questions",
        "schedule": float(UALIGN_QUESTION_SECONDS),
        "options": {"expires": float(UALIGN_QUESTION_SECONDS)},
    }
# Where beat keeps when each entry last ran (serve-prod passes the same path).
CELERY_BEAT_SCHEDULE_FILENAME = env_str("CELERY_BEAT_SCHEDULE_FILENAME", str(VAR_DIR / "celerybeat-schedule"))
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = False

# A job is retried at most this many times after its worker died mid-run.
UALIGN_JOB_MAX_ATTEMPTS = env_int("UALIGN_JOB_MAX_ATTEMPTS", 3)
# A running job whose heartbeat is older than this counts as orphaned (its worker died) and may be
# reclaimed by a redelivered task. Workers beat every third of it while a task runs.
UALIGN_JOB_STALE_SECONDS = env_int("UALIGN_JOB_STALE_SECONDS", 60)
# Model weights converted for fast loading (see workers/generation.py).
UALIGN_MODEL_CACHE = env_str("UALIGN_MODEL_CACHE", str(VAR_DIR / "models"))
# LLMdoctor's trained doctors and their training checkpoints, one folder per doctor key (issue #15).
UALIGN_DOCTOR_DIR = env_str("UALIGN_DOCTOR_DIR", str(VAR_DIR / "doctors"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
