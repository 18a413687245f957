"""Django settings, from the environment only (see .env.example for every variable)."""
from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from registry.env import ConfigError, envbool, envfloat, envint, envsecret, envstr
from registry.secrets import load_secret

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("HALLMARK_DATA_DIR", str(BASE_DIR / "data"))).resolve()
PRODUCTION = envbool("HALLMARK_PRODUCTION", False)

_DEV_SECRET = "hallmark-development-only-secret-key-not-for-production"
SECRET_KEY = envsecret("DJANGO_SECRET_KEY") or _DEV_SECRET
if PRODUCTION and SECRET_KEY == _DEV_SECRET:
    raise ConfigError("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set in production "
                      "mode; the development secret is refused")
DEBUG = envbool("DJANGO_DEBUG", not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ConfigError("DJANGO_DEBUG must be off in production mode (HALLMARK_PRODUCTION=1)")
ALLOWED_HOSTS = [h for h in envstr("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in envstr("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# The registry's Ed25519 signing seed and the escrow master key (SecretBox), 32 bytes each.
HALLMARK_SIGNING_KEY = load_secret("HALLMARK_SIGNING_KEY", DATA_DIR, PRODUCTION)
HALLMARK_MASTER_KEY = load_secret("HALLMARK_MASTER_KEY", DATA_DIR, PRODUCTION)
# The transparency log's origin line (C2SP tlog-checkpoint) and the signed-note key name.
HALLMARK_LOG_ORIGIN = envstr("HALLMARK_LOG_ORIGIN", "hallmark.localhost/log")
# Family-wise error rate of one verification (Holm over every test it runs).
HALLMARK_ALPHA = envfloat("HALLMARK_ALPHA", 1e-6)
if not 0 < HALLMARK_ALPHA < 0.05:
    raise ConfigError(f"HALLMARK_ALPHA={HALLMARK_ALPHA} must lie in (0, 0.05)")

# Fetch policy for suspect URLs.
HALLMARK_FETCH = {
    "max_bytes": envint("HALLMARK_FETCH_MAX_BYTES", 512 * 1024 * 1024),
    "timeout_seconds": envfloat("HALLMARK_FETCH_TIMEOUT", 120.0),
    "max_redirects": envint("HALLMARK_FETCH_MAX_REDIRECTS", 5),
    "allow_loopback": envbool("HALLMARK_FETCH_ALLOW_LOOPBACK", False),
    "allow_private": envbool("HALLMARK_FETCH_ALLOW_PRIVATE", False),
}
if PRODUCTION and (HALLMARK_FETCH["allow_loopback"] or HALLMARK_FETCH["allow_private"]):
    raise ConfigError("HALLMARK_FETCH_ALLOW_LOOPBACK/ALLOW_PRIVATE must be off in production mode")
HALLMARK_CACHE_DIR = DATA_DIR / "cache"
# Black-box endpoint queries: rate limit (queries per second) and cap per check.
HALLMARK_ENDPOINT_RATE = envfloat("HALLMARK_ENDPOINT_RATE", 50.0)
HALLMARK_ENDPOINT_MAX_QUERIES = envint("HALLMARK_ENDPOINT_MAX_QUERIES", 10_000)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "registry.apps.RegistryConfig",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "registry.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "registry.wsgi.application"

DATABASES = {"default": dj_database_url.parse(
    envstr("DATABASE_URL", f"sqlite:///{DATA_DIR / 'hallmark.sqlite3'}"), conn_max_age=60)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Workers and the web process write concurrently: wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE",
                                       "init_command": "PRAGMA journal_mode=WAL;"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [{"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024  # key blobs can hold trigger sets
FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "registry.api_errors.exception_handler",
}

# Celery: JSON only, late acks with requeue on a lost worker, one task per child at a time,
# time limits, and a Redis visibility timeout above the hard limit (so long checks are not
# redelivered while still running). The database, not Celery's result store, holds progress.
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", f"redis+socket://{DATA_DIR / 'redis.sock'}")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = envint("HALLMARK_TASK_SOFT_TIME_LIMIT", 600)
CELERY_TASK_TIME_LIMIT = envint("HALLMARK_TASK_TIME_LIMIT", 660)
# Redelivery by the broker is the slow path (a dead worker's unacked messages come back after
# the visibility timeout, which must exceed the longest task so a live one is never run twice);
# the fast path is the database lease + sweeper below (docs/architecture.md, "Faults").
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("HALLMARK_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 600)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Sending to a dead broker fails within about a second instead of hanging the request.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": envint("HALLMARK_PUBLISH_RETRIES", 2),
                                    "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_BROKER_CONNECTION_TIMEOUT = envfloat("HALLMARK_BROKER_CONNECT_TIMEOUT", 4.0)
CELERY_WORKER_MAX_TASKS_PER_CHILD = envint("HALLMARK_WORKER_MAX_TASKS_PER_CHILD", 200)
# A child must report ready within this time or is killed; children fork from a warmed-up
# parent and are ready in milliseconds, this is the margin for a loaded host.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = envfloat("HALLMARK_WORKER_PROC_ALIVE_TIMEOUT", 30.0)
CELERY_TASK_DEFAULT_QUEUE = envstr("HALLMARK_QUEUE", "hallmark")
# The sweeper has its own queue (workers consume both) so it is not stuck behind a backlog.
HALLMARK_SWEEP_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}.sweep"
CELERY_TASK_ROUTES = {"workers.sweep": {"queue": HALLMARK_SWEEP_QUEUE}}
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ConfigError("HALLMARK_TASK_SOFT_TIME_LIMIT must be below HALLMARK_TASK_TIME_LIMIT")
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= CELERY_TASK_TIME_LIMIT:
    raise ConfigError("HALLMARK_VISIBILITY_TIMEOUT must exceed HALLMARK_TASK_TIME_LIMIT, or the "
                      "broker redelivers tasks that are still running")

# Faults: a running fetch, check or finalize holds a lease in its row, renewed every third of
# HALLMARK_LEASE_SECONDS; the sweeper (Celery beat, every HALLMARK_SWEEP_INTERVAL seconds)
# re-drives work whose lease ran out (dead worker), whose message could not be sent, or whose
# last message is older than HALLMARK_REDRIVE_AFTER (lost with the broker).
HALLMARK_LEASE_SECONDS = envfloat("HALLMARK_LEASE_SECONDS", 30.0)
HALLMARK_SWEEP_INTERVAL = envfloat("HALLMARK_SWEEP_INTERVAL", 15.0)
HALLMARK_REDRIVE_AFTER = envfloat("HALLMARK_REDRIVE_AFTER", 120.0)
HALLMARK_SWEEP_BATCH = envint("HALLMARK_SWEEP_BATCH", 500)  # rows re-driven per state per sweep
# A check whose worker died this many times is recorded as an error (the verdict is then
# inconclusive); infrastructure failures retry with backoff and jitter up to HALLMARK_TASK_RETRIES
# times per message, and the sweeper re-drives them after that.
HALLMARK_CHECK_MAX_LOST = envint("HALLMARK_CHECK_MAX_LOST", 3)
HALLMARK_TASK_RETRIES = envint("HALLMARK_TASK_RETRIES", 8)
HALLMARK_RETRY_BACKOFF_MAX = envint("HALLMARK_RETRY_BACKOFF_MAX", 60)
CELERY_BEAT_SCHEDULE = {"sweep": {"task": "workers.sweep", "schedule": HALLMARK_SWEEP_INTERVAL,
                                  "options": {"expires": HALLMARK_SWEEP_INTERVAL}}}
if not 0 < HALLMARK_LEASE_SECONDS < CELERY_TASK_TIME_LIMIT or HALLMARK_SWEEP_INTERVAL <= 0:
    raise ConfigError("HALLMARK_LEASE_SECONDS must be positive and below HALLMARK_TASK_TIME_LIMIT, "
                      "and HALLMARK_SWEEP_INTERVAL positive")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"hallmark": {"handlers": ["console"], "level": envstr("HALLMARK_LOG_LEVEL", "INFO")}},
}
os.makedirs(DATA_DIR, exist_ok=True)
