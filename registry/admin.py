"""The admin: operators may look at everything, but evidence is read-only.

The transparency log (entries, Merkle nodes, head, checkpoints), signed reports, licences and
the signed registrations inside models and commitments are append-only: a report is never
changed after signing and corrections are new log entries (DESIGN.md). Their admin pages list
and show, and refuse add, change and delete; escrowed secrets never show.
"""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from registry import models


class ReadOnlyAdmin(admin.ModelAdmin):
    """List and view only: no add, change or delete, not even for superusers."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.Owner)
class OwnerAdmin(admin.ModelAdmin):
    list_display = ["user", "keyid", "created_at"]
    exclude = ["sealed_signing_key"]
    readonly_fields = ["public_key", "keyid"]


@admin.register(models.RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "owner", "created_at", "log_index"]


@admin.register(models.Commitment)
class CommitmentAdmin(ReadOnlyAdmin):
    list_display = ["digest", "scheme", "model", "created_at", "log_index"]
    exclude = ["sealed_key", "salt"]  # escrow never shows in the admin


@admin.register(models.Verification)
class VerificationAdmin(admin.ModelAdmin):
    list_display = ["public_id", "status", "checks_done", "checks_expected", "submitted_at"]


@admin.register(models.CheckResult)
class CheckResultAdmin(ReadOnlyAdmin):
    list_display = ["verification", "scheme", "status", "log10_p", "seconds"]


@admin.register(models.Report)
class ReportAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "verification", "log_index", "created_at"]


@admin.register(models.Licence)
class LicenceAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "licensee", "log_index"]


@admin.register(models.ReferenceModel)
class ReferenceModelAdmin(admin.ModelAdmin):
    """Read-mostly: panel models are added with `manage.py panel add` (validated and probed
    there); the admin lists and removes them."""

    list_display = ["name", "domain", "format", "architecture", "sha256", "created_at"]
    list_filter = ["domain"]
    exclude = ["data"]  # model bytes are not editable here
    readonly_fields = ["name", "domain", "format", "architecture", "sha256", "created_at"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(models.LogEntry)
class LogEntryAdmin(ReadOnlyAdmin):
    list_display = ["index", "kind", "created_at"]


@admin.register(models.Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["size", "created_at"]
