"""Web pages: thin views over the same services as the API."""
from __future__ import annotations

import functools
import json

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.safestring import mark_safe
from rest_framework.exceptions import APIException

from registry import forms, receipts, reporting, throttling
from registry.charts import check_chart
from registry.identities import new_owner_fields
from registry.models import LogEntry, Owner, RegisteredModel, Report, Verification
from registry.owners import log_owner
from registry.registration import add_commitment, register_model
from registry.submission import submit
from verifier.forgery import DEFAULT_MIN_FORGERY_BITS


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "registry/home.html")


class LoginView(auth_views.LoginView):
    """Django's login, throttled per address like /api/token (axes adds the lockout)."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        throttling.check(request, throttling.LoginThrottle)
        return super().post(request, *args, **kwargs)


def signup(request: HttpRequest) -> HttpResponse:
    form = forms.SignupForm(request.POST or None)
    if request.method == "POST":
        throttling.check(request, throttling.SignupThrottle)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            log_owner(Owner.objects.create(user=user, **new_owner_fields(None)))
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("dashboard")
    return render(request, "registry/signup.html", {"form": form})


def _owner_or_none(request: HttpRequest) -> Owner | None:
    """The logged-in user's owner record; None for accounts made outside sign-up (superusers)."""
    return Owner.objects.filter(user=request.user).first()


def _no_owner(request: HttpRequest) -> HttpResponse:
    return render(request, "registry/error.html", {
        "status": 403, "title": "No owner identity",
        "detail": "this account has no owner identity (it was created outside sign-up, e.g. "
                  "with createsuperuser); sign up for an owner account to register models",
        "request_id": "-"}, status=403)


def owner_required(view):  # type: ignore[no-untyped-def]
    """Logged in with an owner identity; a superuser without one gets a page saying so."""
    @login_required
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        owner = _owner_or_none(request)
        if owner is None:
            return _no_owner(request)
        request.owner = owner  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)
    return wrapped


@owner_required
def dashboard(request: HttpRequest) -> HttpResponse:
    owner = request.owner  # type: ignore[attr-defined]
    verifications = owner.verifications.select_related("suspect", "report").order_by(
        "-submitted_at")[:50]
    return render(request, "registry/dashboard.html", {
        "owner": owner, "models": owner.models.all(),
        "rows": [(v, _outcome(v)) for v in verifications]})


def _outcome(v: Verification) -> str:
    """The verdict shown beside a verification: its report's outcome, or its status."""
    report = getattr(v, "report", None)
    if report is None:
        return v.status
    return reporting.outcome_of(reporting.statement_of(report)["predicate"]["verdict"])


@owner_required
def model_new(request: HttpRequest) -> HttpResponse:
    owner = request.owner  # type: ignore[attr-defined]
    form = forms.ModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if RegisteredModel.objects.filter(owner=owner, name=data["name"],
                                          version=data["version"]).exists():
            form.add_error("version", "you already registered this name and version; bump the "
                                      "version for a new release")
        else:
            model = register_model(owner, **data)
            return redirect("model_detail", public_id=model.public_id)
    return render(request, "registry/model_new.html", {"form": form})


@owner_required
def model_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    model = get_object_or_404(RegisteredModel, public_id=public_id, owner=request.owner)
    if request.method == "POST":
        throttling.check(request, throttling.UploadThrottle)
    form = forms.CommitmentForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            c = add_commitment(model, form.cleaned_data["key"].read())
            messages.success(request, f"Committed {c.scheme} key as {c.digest} (log index {c.log_index}).")
            return redirect("model_detail", public_id=model.public_id)
        except APIException as e:
            form.add_error("key", str(e.detail))
    return render(request, "registry/model_detail.html", {
        "model": model, "form": form, "model_receipt": _receipt_text(model.log_index),
        "commitments": [(c, _receipt_text(c.log_index)) for c in model.commitments.all()]})


def _receipt_text(log_index: int | None) -> str:
    """The signed receipt of a log entry, as the JSON the API answered at registration."""
    if log_index is None:
        return ""
    entry = LogEntry.objects.get(index=log_index)
    return json.dumps(receipts.receipt(entry), indent=1, sort_keys=True)


@owner_required
def verification_new(request: HttpRequest) -> HttpResponse:
    owner = request.owner
    if request.method == "POST":
        throttling.check(request, throttling.SuspectHostThrottle, throttling.SubmitThrottle)
    form = forms.SuspectForm(request.POST or None, owner=owner)
    if request.method == "POST" and form.is_valid():
        try:
            v = submit(owner, form.cleaned_data["url"], form.cleaned_data["target"])
            return redirect("verification_detail", public_id=v.public_id)
        except APIException as e:
            form.add_error("url", str(e.detail))
    return render(request, "registry/verification_new.html", {"form": form})


@owner_required
def verification_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    v = get_object_or_404(Verification.objects.select_related("suspect"), public_id=public_id,
                          requested_by=request.owner)
    return render(request, "registry/verification_detail.html", {
        "v": v, "report": Report.objects.filter(verification=v).first()})


def report_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    """Public, like the API's report: anyone holding the link can read and audit it."""
    r = get_object_or_404(Report, public_id=public_id)
    statement = reporting.statement_of(r)
    p = statement["predicate"]
    floor = p.get("min_forgery_bits", DEFAULT_MIN_FORGERY_BITS)
    claims = p.get("claims", {})  # a scan states each scheme's claim once (compact rows)
    checks = [{**c, "claim": c.get("claim") or claims.get(c["scheme"], ""),
               "chart": mark_safe(check_chart(  # noqa: S308 (built from numbers, escaped)
                   c.get("log10_p"), c.get("alpha"), floor, f"{c['scheme']} on {c['model_name']}"))}
              for c in p["checks"]]
    outcome = reporting.outcome_of(p["verdict"])
    return render(request, "registry/report_detail.html", {
        "report": r, "statement": statement, "p": p, "checks": checks, "outcome": outcome,
        "floor": floor})


def report_download(request: HttpRequest, public_id: str) -> HttpResponse:
    """The signed report as a file: the JSON document `hallmark audit` checks, as an attachment
    (the same stored bytes as GET /api/reports/<id>)."""
    served = reporting.served_document(public_id)
    if served is None:
        raise Http404("no report with this id")
    response = HttpResponse(served[1], content_type="application/json")
    response["ETag"] = served[0]
    response["Content-Disposition"] = f'attachment; filename="hallmark-report-{public_id}.json"'
    return response
