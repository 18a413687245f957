"""Web forms for owners: sign up, register a model, add a commitment, submit a suspect."""
from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.core.validators import RegexValidator

from registry import validators
from registry.models import RegisteredModel

_SHA256 = RegexValidator(r"^[0-9a-f]{64}$", "must be a SHA-256 digest: 64 lowercase hex "
                         "characters (`sha256sum FILE`), or empty")


class SignupForm(UserCreationForm):
    """Django's sign-up form under the API's username rule (case-insensitive uniqueness)."""

    def clean_username(self) -> str:
        return validators.new_username(self.cleaned_data["username"])


class ModelForm(forms.ModelForm):
    """The same rules as the API's ModelSerializer (registry/validators.py)."""

    class Meta:
        model = RegisteredModel
        fields = ["name", "version", "description", "artifact_sha256", "base_model_sha256"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["description"].max_length = validators.DESCRIPTION_MAX
        for name in ("artifact_sha256", "base_model_sha256"):
            self.fields[name].validators.append(_SHA256)

    def clean_name(self) -> str:
        return validators.printable_name(self.cleaned_data["name"])

    def clean_version(self) -> str:
        return validators.printable_name(self.cleaned_data["version"], validators.VERSION_MAX)

    def clean_description(self) -> str:
        return validators.free_text(self.cleaned_data["description"])


class CommitmentForm(forms.Form):
    key = forms.FileField(help_text="A key file written by the hallmark library (Key.to_bytes()).")


class SuspectForm(forms.Form):
    url = forms.CharField(max_length=2000, help_text="http(s) URL of a safetensors, ONNX or "
                          "PEFT adapter file, a Hugging Face repo (hf://org/name[@revision] or "
                          "https://huggingface.co/org/name), or an Open Inference Protocol v2 "
                          "model endpoint")
    target = forms.ModelChoiceField(queryset=RegisteredModel.objects.none(), required=False,
                                    empty_label="every commitment in the registry",
                                    to_field_name="public_id")

    def __init__(self, *args: object, owner: object = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = RegisteredModel.objects.filter(owner=owner)
