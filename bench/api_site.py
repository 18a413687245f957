"""Settings and URLs for the API benchmark: the registry's own, plus a bare DRF view (the
ceiling a DRF endpoint can reach on this server) at /bench/bare.

    DJANGO_SETTINGS_MODULE=bench.api_site gunicorn -w 2 registry.wsgi
"""
from __future__ import annotations

from django.urls import include, path
from rest_framework.decorators import api_view, permission_classes, renderer_classes
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from registry.settings import *  # noqa: F403 - the registry's settings, unchanged

ROOT_URLCONF = "bench.api_site"


@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONRenderer])
def bare(request: Request) -> Response:
    """No database, no work: what DRF and the middleware cost per request."""
    return Response({"ok": True})


urlpatterns = [path("bench/bare", bare), path("", include("registry.urls"))]
