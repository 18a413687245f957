"""Settings for the API benchmark: the registry's own, with bench.api_urls as the URLconf (the
registry's URLs plus a bare DRF view at /bench/bare).

    DJANGO_SETTINGS_MODULE=bench.api_site gunicorn -w 2 registry.wsgi
"""
from __future__ import annotations

from registry.settings import *  # noqa: F403 - the registry's settings, unchanged

ROOT_URLCONF = "bench.api_urls"
