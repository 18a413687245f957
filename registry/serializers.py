"""DRF serializers: what the API accepts and shows (never an escrowed key or a salt)."""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from registry import validators
from registry.models import Commitment, RegisteredModel, Verification
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import unb64_strict
from verifier.provenance import key_sha256

MAX_PUBLISHER_KEYS = 4  # publisher keys one submission may name
MAX_PUBLISHER_KEY_CHARS = 4096  # a P-521 public key PEM is about 270 characters


def _django_rule(rule, value, *args):  # type: ignore[no-untyped-def]
    """Run a registry.validators rule, turning its error into a DRF ValidationError."""
    try:
        return rule(value, *args)
    except DjangoValidationError as e:
        raise serializers.ValidationError(e.messages) from None


def _sha256_hex(value: str) -> str:
    if value and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
        raise serializers.ValidationError(
            "must be a SHA-256 digest: 64 lowercase hex characters (`sha256sum FILE`), or empty")
    return value


def _decoded(value: str, what: str, size: int, fix: str) -> bytes:
    try:
        return unb64_strict(value, what, size)
    except EvidenceError as e:
        raise serializers.ValidationError(f"{e}; {fix}") from None


class SignupSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=validators.USERNAME_MAX)
    password = serializers.CharField(min_length=8, max_length=256, write_only=True)
    public_key = serializers.CharField(required=False, max_length=64,
                                       help_text="base64 Ed25519 key, for BYOK")

    def validate_username(self, value: str) -> str:
        return _django_rule(validators.new_username, value)

    def validate_public_key(self, value: str) -> bytes:
        return _decoded(value, "public_key", 32, "send the base64 Ed25519 public key that "
                        "`hallmark keygen` prints")


def _signature(value: str) -> bytes:
    return _decoded(value, "owner_signature", 64, "send the base64 signature that "
                    "`hallmark request` prints")


class ModelSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    owner = serializers.CharField(source="owner.keyid", read_only=True)
    owner_signature = serializers.CharField(required=False, write_only=True,
                                            help_text="base64 Ed25519 signature (BYOK owners)")

    class Meta:
        model = RegisteredModel
        fields = ["id", "owner", "name", "version", "description", "artifact_sha256",
                  "base_model_sha256", "owner_signature", "created_at", "log_index"]
        read_only_fields = ["created_at", "log_index"]

    def validate_owner_signature(self, value: str) -> bytes:
        return _signature(value)

    def validate_name(self, value: str) -> str:
        return _django_rule(validators.printable_name, value)

    def validate_version(self, value: str) -> str:
        return _django_rule(validators.printable_name, value, validators.VERSION_MAX)

    def validate_description(self, value: str) -> str:
        return _django_rule(validators.free_text, value)

    def validate_artifact_sha256(self, value: str) -> str:
        return _sha256_hex(value)

    def validate_base_model_sha256(self, value: str) -> str:
        return _sha256_hex(value)

    def validate(self, attrs: dict) -> dict:
        owner = self.context["request"].user.owner
        if RegisteredModel.objects.filter(owner=owner, name=attrs["name"],
                                          version=attrs.get("version", "1")).exists():
            raise serializers.ValidationError(
                "you already registered this name and version; bump `version` for a new release")
        return attrs


class CommitmentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    model = serializers.UUIDField(source="model.public_id", read_only=True)

    class Meta:
        model = Commitment
        fields = ["id", "model", "scheme", "public_params", "screening", "digest", "created_at",
                  "log_index"]
        read_only_fields = fields


class CommitmentUploadSerializer(serializers.Serializer):
    key = serializers.FileField(help_text="a key blob written by the hallmark library")
    owner_signature = serializers.CharField(required=False,
                                            help_text="base64 Ed25519 signature (BYOK owners)")

    def validate_owner_signature(self, value: str) -> bytes:
        return _signature(value)


class LicenceRequestSerializer(serializers.Serializer):
    licensee = serializers.CharField(max_length=validators.NAME_MAX)
    model = serializers.FileField(help_text="the encrypted model (safetensors) the licence decrypts")

    def validate_licensee(self, value: str) -> str:
        return _django_rule(validators.printable_name, value)


class SubmitSerializer(serializers.Serializer):
    """A suspect submission: the URL, and optionally one of your models to check it against."""

    url = serializers.CharField(max_length=validators.URL_MAX, trim_whitespace=True,
                                error_messages={"blank": "give the suspect's http(s) URL",
                                                "required": "give the suspect's http(s) URL"})
    target = serializers.UUIDField(required=False, allow_null=True, help_text=(
        "the id of a model to check against; omit it to scan every commitment"))
    publisher_keys = serializers.ListField(
        child=serializers.CharField(max_length=MAX_PUBLISHER_KEY_CHARS, trim_whitespace=False),
        required=False, max_length=MAX_PUBLISHER_KEYS, help_text=(
            "elliptic-curve public keys (PEM) to check the suspect's model-signing signature "
            "(model.sig) with, beside the key shipped in the suspect"))

    def validate_publisher_keys(self, keys: list[str]) -> list[str]:
        for n, pem in enumerate(keys):
            if key_sha256(pem.encode()) is None:
                raise serializers.ValidationError(
                    f"publisher_keys[{n}] is not an elliptic-curve public key in PEM (P-256, "
                    "P-384 or P-521, model-signing's key-based signatures); export it with "
                    "`openssl ec -in publisher.pem -pubout -out publisher.pub.pem`")
        return keys


class VerificationSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    url = serializers.CharField(source="suspect.url")
    target = serializers.UUIDField(source="target.public_id", required=False, allow_null=True)
    progress = serializers.SerializerMethodField()
    suspect = serializers.SerializerMethodField()
    report = serializers.SerializerMethodField()

    class Meta:
        model = Verification
        fields = ["id", "url", "target", "status", "progress", "checks_done", "checks_expected",
                  "queries", "error_code", "error_message", "suspect", "report", "submitted_at",
                  "fetched_at", "finished_at"]
        read_only_fields = [f for f in fields if f not in ("url", "target")]

    def get_progress(self, v: Verification) -> str:
        return v.progress

    def get_suspect(self, v: Verification) -> dict:
        s = v.suspect
        return {"sha256": s.sha256, "size": s.size, "format": s.format, "kind": s.kind}

    def get_report(self, v: Verification) -> str | None:
        report = getattr(v, "report", None)
        return str(report.public_id) if report is not None else None


class CountersignatureSerializer(serializers.Serializer):
    sig = serializers.CharField(max_length=100, help_text=(
        "base64 Ed25519 signature over the report envelope's DSSE PAE (hallmark countersign)"))
