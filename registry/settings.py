"""Django settings, from the environment only (see .env.example for every variable)."""
from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from dotenv import load_dotenv

from registry.env import ConfigError, envbool, envfloat, envint, envsecret, envstr, envwitnesses
from registry.secrets import load_secret

BASE_DIR = Path(__file__).resolve().parent.parent
# A `.env` file beside manage.py, if present, fills variables the environment leaves unset
# (python-dotenv; the real environment always wins). `.env.example` lists every variable.
load_dotenv(BASE_DIR / ".env", override=False)
DATA_DIR = Path(envstr("HALLMARK_DATA_DIR", str(BASE_DIR / "data"))).resolve()
PRODUCTION = envbool("HALLMARK_PRODUCTION", False)

_DEV_SECRET = "hallmark-development-only-secret-key-not-for-production"
SECRET_KEY = envsecret("DJANGO_SECRET_KEY") or _DEV_SECRET
if PRODUCTION and SECRET_KEY == _DEV_SECRET:
    raise ConfigError("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set in production "
                      "mode; the development secret is refused")
# Debug pages leak settings and source: off unless asked for (and `serve` refuses them on any
# address but loopback).
DEBUG = envbool("DJANGO_DEBUG", False)
if PRODUCTION and DEBUG:
    raise ConfigError("DJANGO_DEBUG must be off in production mode (HALLMARK_PRODUCTION=1)")
ALLOWED_HOSTS = [h for h in envstr("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in envstr("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# The registry's Ed25519 signing seed and the escrow master key (SecretBox), 32 bytes each.
HALLMARK_SIGNING_KEY = load_secret("HALLMARK_SIGNING_KEY", DATA_DIR, PRODUCTION)
HALLMARK_MASTER_KEY = load_secret("HALLMARK_MASTER_KEY", DATA_DIR, PRODUCTION)
# The transparency log's origin line (C2SP tlog-checkpoint) and the signed-note key name.
HALLMARK_LOG_ORIGIN = envstr("HALLMARK_LOG_ORIGIN", "hallmark.localhost/log")
# Witnesses that cosign each new checkpoint (c2sp.org/tlog-witness): [(URL, witness vkey)],
# and how long one witness request may take, in seconds.
HALLMARK_WITNESSES = envwitnesses("HALLMARK_WITNESSES")
HALLMARK_WITNESS_TIMEOUT = envfloat("HALLMARK_WITNESS_TIMEOUT", 5.0)
# Family-wise error rate of one verification (Holm over every test it runs).
HALLMARK_ALPHA = envfloat("HALLMARK_ALPHA", 1e-6)
if not 0 < HALLMARK_ALPHA < 0.05:
    raise ConfigError(f"HALLMARK_ALPHA={HALLMARK_ALPHA} must lie in (0, 0.05)")
# Forgery floor: a check attributes only when a seed search would need >= 2^this trials to
# reach its p-value; keys that could never reach it are refused at upload (verifier.forgery).
HALLMARK_MIN_FORGERY_BITS = envfloat("HALLMARK_MIN_FORGERY_BITS", 80.0)
if not 0 < HALLMARK_MIN_FORGERY_BITS <= 1000:
    raise ConfigError(f"HALLMARK_MIN_FORGERY_BITS={HALLMARK_MIN_FORGERY_BITS} must lie in "
                      "(0, 1000]; 80 (p <= 2^-80) is the default")

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
# Hugging Face Hub suspects (docs/ingestion.md): the Hub's address, a token for gated repos,
# and whether to download whole files instead of reading byte ranges.
HALLMARK_HF_ENDPOINT = envstr("HALLMARK_HF_ENDPOINT",
                              envstr("HF_ENDPOINT", "https://huggingface.co")).rstrip("/")
HALLMARK_HF_TOKEN = envsecret("HALLMARK_HF_TOKEN")
HALLMARK_HUB_FULL_DOWNLOAD = envbool("HALLMARK_HUB_FULL_DOWNLOAD", False)
# Black-box endpoint queries: rate limit (queries per second) and cap per check.
HALLMARK_ENDPOINT_RATE = envfloat("HALLMARK_ENDPOINT_RATE", 50.0)
HALLMARK_ENDPOINT_MAX_QUERIES = envint("HALLMARK_ENDPOINT_MAX_QUERIES", 10_000)

INSTALLED_APPS = [
    "django.contrib.admin",
    "axes",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc assets served locally: docs work offline
    "registry.apps.RegistryConfig",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files (admin, API docs) from gunicorn
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]
# Before anything reads a body: a request id on every request (logged with every 500) and
# a refusal of bodies over the caps below, answered 413 without reading them.
MIDDLEWARE.insert(0, "registry.limits.RequestLimitsMiddleware")
ROOT_URLCONF = "registry.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
        "registry.context.registry_key",
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
# A connection kept open (CONN_MAX_AGE) is checked before its first query of each request or
# task, so one that died with a PostgreSQL restart is replaced instead of failing the work.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
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
WHITENOISE_USE_FINDERS = True  # serve app static files without a collectstatic step
# Request bodies: uploads (key blobs, encrypted models) up to HALLMARK_MAX_UPLOAD_BYTES,
# everything else (JSON, forms) up to HALLMARK_MAX_BODY_BYTES. Larger bodies are refused from
# their Content-Length before a byte is read; uploads stream to a temporary file past 2.5 MB,
# and an upload handler stops reading the moment a file passes the cap (a lying
# Content-Length cannot make the process hold more).
HALLMARK_MAX_UPLOAD_BYTES = envint("HALLMARK_MAX_UPLOAD_BYTES", 256 * 1024 * 1024)
HALLMARK_MAX_BODY_BYTES = envint("HALLMARK_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = HALLMARK_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 100
DATA_UPLOAD_MAX_NUMBER_FILES = 4
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_HANDLERS = ["registry.limits.CappedUploadHandler",
                        "django.core.files.uploadhandler.MemoryFileUploadHandler",
                        "django.core.files.uploadhandler.TemporaryFileUploadHandler"]

# Login lockout (django-axes, attempts kept in the database so every web host sees them):
# HALLMARK_LOGIN_FAILURES wrong passwords for one username from one address lock that pair
# out for HALLMARK_LOGIN_COOLOFF_MINUTES, on the web login and on /api/token alike (429).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend",
                           "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = envint("HALLMARK_LOGIN_FAILURES", 5)
AXES_COOLOFF_TIME = envfloat("HALLMARK_LOGIN_COOLOFF_MINUTES", 15.0) / 60.0  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "registry.limits.lockout_response"
AXES_VERBOSE = False

# Throttle counters live in this cache: set HALLMARK_CACHE_URL to a Redis URL whenever more
# than one web process serves (scaled mode), or each process counts alone. Production mode
# refuses the per-process default.
_CACHE_URL = envstr("HALLMARK_CACHE_URL", "")
if PRODUCTION and not _CACHE_URL:
    raise ConfigError("HALLMARK_CACHE_URL must name a Redis server in production mode "
                      "(redis://host:6379/1): throttles counted per process would not hold")
CACHES = {"default": (
    {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _CACHE_URL,
     "KEY_PREFIX": "hallmark", "TIMEOUT": 3600}
    if _CACHE_URL else
    {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "hallmark"})}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "registry.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": envint("HALLMARK_PAGE_SIZE", 50),
    "DEFAULT_PARSER_CLASSES": ["registry.parsers.BoundedJSONParser",
                               "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    # Rates per scope (registry/throttling.py says who is counted and how). An untargeted
    # verification scans the whole registry and costs HALLMARK_SCAN_COST submissions.
    "DEFAULT_THROTTLE_RATES": {
        "signup": envstr("HALLMARK_RATE_SIGNUP", "10/hour"),
        "login": envstr("HALLMARK_RATE_LOGIN", "30/min"),
        "submit": envstr("HALLMARK_RATE_SUBMIT", "120/hour"),
        "suspect_host": envstr("HALLMARK_RATE_SUSPECT_HOST", "60/min"),
        "upload": envstr("HALLMARK_RATE_UPLOAD", "60/hour"),
    },
}
HALLMARK_SCAN_COST = envint("HALLMARK_SCAN_COST", 10)
SPECTACULAR_SETTINGS = {
    "TITLE": "Hallmark registry API",
    "DESCRIPTION": "Register watermarked models and keyed commitments, submit suspects, fetch "
                   "signed reports and transparency-log proofs. Errors are RFC 9457 problem "
                   "details.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
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
# Celery's Django fixup closes every database connection before and after each task unless this
# is set: a new PostgreSQL backend per task (fork, authentication, catalog caches) cost more
# database CPU than the task's own statements. The worker keeps its connection instead and
# applies Django's request rule per task (workers/celery.py: close_old_connections, so
# CONN_MAX_AGE, broken connections and health checks behave as in the web process).
CELERY_DB_REUSE_MAX = 1_000_000
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
# Pool children are recycled after this many tasks, or after a task that took them past this
# peak resident size (KiB; a big suspect): replacing a child idles its worker for 0.3-5 s
# (the old child's exit, then billiard's pool maintenance), which at 200 tasks left a
# worker idle up to 43 % of a burst's drain; memory, not a task count, is what recycling guards.
CELERY_WORKER_MAX_TASKS_PER_CHILD = envint("HALLMARK_WORKER_MAX_TASKS_PER_CHILD", 2000)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = envint("HALLMARK_WORKER_MAX_MEMORY_PER_CHILD", 3 * 1024 * 1024)
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
# Checks per batch task: up to K commitments tested against one loaded suspect. Work beyond
# HALLMARK_SCAN_MIN_BATCH checks is cut into up to HALLMARK_SCAN_SPREAD batches, to run on
# several workers; below it, one task is cheaper than several (workers/tasks.py: _batched).
HALLMARK_SCAN_BATCH = envint("HALLMARK_SCAN_BATCH", 250)
HALLMARK_SCAN_SPREAD = envint("HALLMARK_SCAN_SPREAD", 8)
HALLMARK_SCAN_MIN_BATCH = envint("HALLMARK_SCAN_MIN_BATCH", 4)
if min(HALLMARK_SCAN_BATCH, HALLMARK_SCAN_SPREAD, HALLMARK_SCAN_MIN_BATCH) < 1:
    raise ConfigError("HALLMARK_SCAN_BATCH, HALLMARK_SCAN_SPREAD and HALLMARK_SCAN_MIN_BATCH must "
                      f"be >= 1, received {HALLMARK_SCAN_BATCH}, {HALLMARK_SCAN_SPREAD} and "
                      f"{HALLMARK_SCAN_MIN_BATCH}")
HALLMARK_RETRY_BACKOFF_MAX = envint("HALLMARK_RETRY_BACKOFF_MAX", 60)
CELERY_BEAT_SCHEDULE = {"sweep": {"task": "workers.sweep", "schedule": HALLMARK_SWEEP_INTERVAL,
                                  "options": {"expires": HALLMARK_SWEEP_INTERVAL}}}
if not 0 < HALLMARK_LEASE_SECONDS < CELERY_TASK_TIME_LIMIT or HALLMARK_SWEEP_INTERVAL <= 0:
    raise ConfigError("HALLMARK_LEASE_SECONDS must be positive and below HALLMARK_TASK_TIME_LIMIT, "
                      "and HALLMARK_SWEEP_INTERVAL positive")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "registry.requestid.RequestIdFilter"}},
    "formatters": {"plain": {
        "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain",
                             "filters": ["request_id"]}},
    "loggers": {
        "hallmark": {"handlers": ["console"], "level": envstr("HALLMARK_LOG_LEVEL", "INFO")},
        # every 500 (with its traceback and request id), in production too
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

# Production serving behind a TLS-terminating proxy (docs/architecture.md, "Production"):
# HTTPS only, HSTS, secure cookies. The proxy must set X-Forwarded-Proto.
if PRODUCTION:
    SECURE_SSL_REDIRECT = envbool("HALLMARK_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^health$"]  # probes from inside the network speak plain http
    SECURE_HSTS_SECONDS = envint("HALLMARK_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("HALLMARK_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("HALLMARK_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ConfigError("DJANGO_SECRET_KEY must be at least 50 random characters in production "
                          "mode; generate one with `python -c \"import secrets;"
                          "print(secrets.token_urlsafe(64))\"`")
os.makedirs(DATA_DIR, exist_ok=True)
os.makedirs(STATIC_ROOT, exist_ok=True)  # WhiteNoise warns about a missing folder
