"""The registry's URLs plus /bench/bare: a DRF view with no database and no work, the ceiling a
DRF endpoint can reach on the same server (the API benchmark's reference)."""
from __future__ import annotations

from django.urls import include, path
from rest_framework.decorators import api_view, permission_classes, renderer_classes
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response


@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONRenderer])
def bare(request: Request) -> Response:
    """What DRF and the middleware cost per request."""
    return Response({"ok": True})


urlpatterns = [path("bench/bare", bare), path("", include("registry.urls"))]
