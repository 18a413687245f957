"""The REST API: thin DRF views over the registration, submission and log services."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseNotModified
from django.shortcuts import get_object_or_404
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action, api_view, permission_classes, renderer_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import licensing, receipts, reporting, serializers, throttling, translog, witnessing
from registry.countersigning import countersign
from registry.identities import new_owner_fields, registry_vkey_text
from registry.limits import lockout_response
from registry.models import Commitment, LogEntry, Owner, RegisteredModel, Report, Verification
from registry.owners import log_owner
from registry.registration import add_commitment, register_model
from registry.secrets import unseal
from registry.submission import submit
from verifier.evidence.commitment import make_opening
from verifier.evidence.identity import b64
from verifier.evidence.report import render_report

JSON = "application/json"
# A report's document changes only when an owner countersigns it: caches may keep it a minute
# and then revalidate (a 304 costs one query). A checkpoint changes on every append: always
# revalidate.
REPORT_CACHE = "public, max-age=60"
CHECKPOINT_CACHE = "public, no-cache"


class SignupView(generics.CreateAPIView):
    """Create a user and its owner identity; answers with an API token."""

    permission_classes = [AllowAny]
    serializer_class = serializers.SignupSerializer
    throttle_classes = [throttling.SignupThrottle]

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        s = self.get_serializer(data=request.data)
        s.is_valid(raise_exception=True)
        with transaction.atomic():
            user = User.objects.create_user(s.validated_data["username"],
                                            password=s.validated_data["password"])
            owner = log_owner(Owner.objects.create(
                user=user, **new_owner_fields(s.validated_data.get("public_key"))))
            token = Token.objects.create(user=user)
        return Response({"username": user.username, "token": token.key, "keyid": owner.keyid,
                         "public_key": b64(bytes(owner.public_key)), "byok": owner.byok},
                        status=status.HTTP_201_CREATED)


class TokenView(ObtainAuthToken):
    """An API token for a username and password; throttled per address, locked out by axes."""

    throttle_classes = [throttling.LoginThrottle]
    parser_classes = APIView.parser_classes  # the bounded JSON parser (ObtainAuthToken sets its own)

    def post(self, request: Request, *args: object, **kwargs: object) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            if getattr(request, "axes_locked_out", False) or getattr(
                    request._request, "axes_locked_out", False):
                return lockout_response(request._request)  # type: ignore[return-value]
            raise


class ModelViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                   viewsets.GenericViewSet):
    """The requesting owner's models; other owners' models do not exist for them (404)."""

    serializer_class = serializers.ModelSerializer
    lookup_field = "public_id"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return RegisteredModel.objects.none()
        return RegisteredModel.objects.filter(owner=self.request.user.owner)

    def get_throttles(self):  # type: ignore[no-untyped-def]
        if self.action == "commitments" and self.request.method == "POST":
            return [throttling.UploadThrottle()]
        return super().get_throttles()

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        s = self.get_serializer(data=request.data)
        s.is_valid(raise_exception=True)
        model = register_model(request.user.owner, **s.validated_data)
        entry = LogEntry.objects.get(index=model.log_index)
        body = serializers.ModelSerializer(model, context={"request": request}).data
        return Response({**body, "receipt": receipts.receipt(entry)}, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["get", "post"], url_path="commitments")
    def commitments(self, request: Request, public_id: str) -> Response:
        model = self.get_object()
        if request.method == "GET":
            return Response(serializers.CommitmentSerializer(model.commitments.all(), many=True).data)
        s = serializers.CommitmentUploadSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        c = add_commitment(model, s.validated_data["key"].read(), s.validated_data.get("owner_signature"))
        entry = LogEntry.objects.get(index=c.log_index)
        return Response({**serializers.CommitmentSerializer(c).data, "receipt": receipts.receipt(entry)},
                        status=status.HTTP_201_CREATED)


class CommitmentViewSet(viewsets.ReadOnlyModelViewSet):
    """The requesting owner's commitments; `open` reveals salt and key at the owner's request."""

    serializer_class = serializers.CommitmentSerializer
    lookup_field = "public_id"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if getattr(self, "swagger_fake_view", False):
            return Commitment.objects.none()
        return Commitment.objects.filter(model__owner=self.request.user.owner)

    def get_throttles(self):  # type: ignore[no-untyped-def]
        if self.action == "licences":
            return [throttling.UploadThrottle()]
        return super().get_throttles()

    @action(detail=True, methods=["post"])
    def open(self, request: Request, public_id: str) -> Response:
        c = self.get_object()
        blob = unseal(settings.HALLMARK_MASTER_KEY, bytes(c.sealed_key))
        return Response(make_opening(c.scheme, bytes(c.salt), blob))

    @action(detail=True, methods=["post"])
    def licences(self, request: Request, public_id: str) -> Response:
        """Issue a decryption licence for an advparams-encrypted model to a named licensee."""
        c = self.get_object()
        s = serializers.LicenceRequestSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        lic = licensing.issue(c, s.validated_data["licensee"], s.validated_data["model"].read())
        entry = LogEntry.objects.get(index=lic.log_index)
        return Response({"id": str(lic.public_id), "licensee": lic.licensee,
                         "licence": json.loads(lic.document), "receipt": receipts.receipt(entry)},
                        status=status.HTTP_201_CREATED)


class VerificationViewSet(mixins.CreateModelMixin, mixins.ListModelMixin,
                          mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Suspect submissions: progress comes from the database rows, never Celery's result store."""

    serializer_class = serializers.VerificationSerializer
    lookup_field = "public_id"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if getattr(self, "swagger_fake_view", False):
            return Verification.objects.none()
        return (Verification.objects.filter(requested_by=self.request.user.owner)
                .select_related("suspect", "target", "report"))

    def get_throttles(self):  # type: ignore[no-untyped-def]
        if self.action == "create":
            return [throttling.SuspectHostThrottle(), throttling.SubmitThrottle()]
        return super().get_throttles()

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        s = serializers.SubmitSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        target_id = s.validated_data.get("target")
        target = get_object_or_404(RegisteredModel, public_id=target_id) if target_id else None
        v = submit(request.user.owner, s.validated_data["url"], target,
                   s.validated_data.get("publisher_keys"))
        return Response(self.get_serializer(v).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(responses={200: OpenApiTypes.OBJECT}, parameters=[OpenApiParameter(
    "since", int, description="size of a checkpoint you kept: adds a consistency proof")])
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONRenderer])  # always the JSON document, even for a browser
def report(request: Request, public_id: str) -> HttpResponse:
    """The self-contained signed report, public: anyone can fetch and audit it.

    Served from the bytes stored at signing (one query when this process holds them, two
    otherwise; `reporting.served_document`), with a strong ETag; `?since=` builds
    a fresh document against the newest published checkpoint with a consistency proof."""
    if "since" in request.query_params:
        since = _int_param(request, "since")
        r = get_object_or_404(Report, public_id=public_id)
        try:
            return HttpResponse(render_report(reporting.report_document(r, since)),
                                content_type=JSON)
        except translog.LogRangeError as e:
            raise ValidationError({"since": str(e)}) from None
    served = reporting.served_document(public_id, lambda etag: _matches(request, etag))
    if served is None:
        raise Http404("no report with this id")
    etag, body = served
    return _conditional(request, body, etag, JSON, REPORT_CACHE)


@extend_schema(request=serializers.CountersignatureSerializer, responses={201: OpenApiTypes.OBJECT})
@api_view(["POST"])
@permission_classes([IsAuthenticated])
def report_signatures(request: Request, public_id: str) -> Response:
    """Add the requesting owner's countersignature to a report; it is logged and served."""
    r = get_object_or_404(Report, public_id=public_id)
    s = serializers.CountersignatureSerializer(data=request.data)
    s.is_valid(raise_exception=True)
    owner = get_object_or_404(Owner, user=request.user)
    row = countersign(r, owner, s.validated_data["sig"])
    return Response({"report": str(r.public_id), "keyid": owner.keyid, "sig": row.sig,
                     "log_index": row.log_index}, status=status.HTTP_201_CREATED)


@extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
@api_view(["GET"])
@permission_classes([AllowAny])
def checkpoint(request: Request) -> HttpResponse:
    """The published checkpoint (C2SP signed note with the witnesses' cosignatures), text/plain,
    with a strong ETag: it changes only when the log grows or a witness cosigns."""
    body = witnessing.published_note().encode()
    etag = f'"{hashlib.sha256(body).hexdigest()}"'
    return _conditional(request, body, etag, "text/plain; charset=utf-8", CHECKPOINT_CACHE)


def _conditional(request: Request, body: bytes, etag: str, content_type: str,
                 cache_control: str) -> HttpResponse:
    """`body` with its ETag and Cache-Control, or 304 Not Modified when the client's
    If-None-Match names that ETag (or `*`)."""
    if _matches(request, etag):
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(body, content_type=content_type)
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    return response


def _matches(request: Request, etag: str) -> bool:
    """Whether the request's If-None-Match names `etag` (weak comparison, as RFC 9110 asks for
    If-None-Match) or is `*`."""
    wanted = parse_etags(request.headers.get("If-None-Match", ""))
    return "*" in wanted or etag in wanted or f"W/{etag}" in wanted


def _int_param(request: Request, name: str) -> int:
    try:
        return int(request.query_params[name])
    except (KeyError, ValueError):
        raise ValidationError({name: f"give `{name}` as a whole number"}) from None


def _proof(request: Request, names: tuple[str, str], prove: Callable[[int, int], list[bytes]]
           ) -> Response:
    first, second = (_int_param(request, n) for n in names)
    try:
        hashes = prove(first, second)
    except translog.LogRangeError as e:
        raise ValidationError({"detail": str(e)}) from None
    return Response({names[0]: first, names[1]: second, "hashes": [b64(h) for h in hashes]})


@extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
@api_view(["GET"])
@permission_classes([AllowAny])
def registry_vkey(request: Request) -> HttpResponse:
    """The registry's log key as a C2SP note vkey: pin it with `hallmark audit --registry-key`."""
    return HttpResponse(registry_vkey_text() + "\n", content_type="text/plain; charset=utf-8")


@extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
@api_view(["GET"])
@permission_classes([AllowAny])
def witness_vkeys(request: Request) -> HttpResponse:
    """The vkeys of the witnesses this registry asks to cosign, one a line. Informational:
    an auditor should get a witness's key from its operator (`hallmark audit --witness`)."""
    lines = "".join(f"{w.vkey}\n" for _, w in witnessing.configured())
    return HttpResponse(lines, content_type="text/plain; charset=utf-8")


@extend_schema(responses={200: OpenApiTypes.OBJECT}, parameters=[
    OpenApiParameter("index", int, required=True), OpenApiParameter("size", int, required=True)])
@api_view(["GET"])
@permission_classes([AllowAny])
def inclusion_proof(request: Request) -> Response:
    """RFC 9162 inclusion proof of entry `index` in the tree of `size` entries."""
    return _proof(request, ("index", "size"), translog.inclusion)


@extend_schema(responses={200: OpenApiTypes.OBJECT}, parameters=[
    OpenApiParameter("old", int, required=True), OpenApiParameter("new", int, required=True)])
@api_view(["GET"])
@permission_classes([AllowAny])
def consistency_proof(request: Request) -> Response:
    """RFC 9162 consistency proof from tree size `old` to tree size `new`."""
    return _proof(request, ("old", "new"), translog.consistency)


@extend_schema(responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
@permission_classes([AllowAny])
def log_entry(request: Request, index: int) -> Response:
    e = get_object_or_404(LogEntry, index=index)
    return Response({"index": e.index, "kind": e.kind, "entry": b64(bytes(e.body)),
                     "leaf_hash": b64(bytes(e.leaf_hash))})
