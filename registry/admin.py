from django.contrib import admin

from registry import models


@admin.register(models.Owner)
class OwnerAdmin(admin.ModelAdmin):
    list_display = ["user", "keyid", "created_at"]
    exclude = ["sealed_signing_key"]


@admin.register(models.RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "owner", "created_at", "log_index"]


@admin.register(models.Commitment)
class CommitmentAdmin(admin.ModelAdmin):
    list_display = ["digest", "scheme", "model", "created_at", "log_index"]
    exclude = ["sealed_key", "salt"]  # escrow never shows in the admin


@admin.register(models.Verification)
class VerificationAdmin(admin.ModelAdmin):
    list_display = ["public_id", "status", "checks_done", "checks_expected", "submitted_at"]


@admin.register(models.CheckResult)
class CheckResultAdmin(admin.ModelAdmin):
    list_display = ["verification", "scheme", "status", "log10_p", "seconds"]


@admin.register(models.Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["public_id", "verification", "log_index", "created_at"]


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
class LogEntryAdmin(admin.ModelAdmin):
    list_display = ["index", "kind", "created_at"]
