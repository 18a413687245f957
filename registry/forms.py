"""Web forms for owners: sign up, register a model, add a commitment, submit a suspect."""
from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from registry.models import RegisteredModel


class SignupForm(UserCreationForm):
    pass


class ModelForm(forms.ModelForm):
    class Meta:
        model = RegisteredModel
        fields = ["name", "version", "description", "artifact_sha256", "base_model_sha256"]


class CommitmentForm(forms.Form):
    key = forms.FileField(help_text="A key file written by the hallmark library (Key.to_bytes()).")


class SuspectForm(forms.Form):
    url = forms.CharField(max_length=2000, help_text="http(s) URL of a safetensors, ONNX or "
                          "PEFT adapter file, or of an Open Inference Protocol v2 model endpoint")
    target = forms.ModelChoiceField(queryset=RegisteredModel.objects.none(), required=False,
                                    empty_label="every commitment in the registry",
                                    to_field_name="public_id")

    def __init__(self, *args: object, owner: object = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = RegisteredModel.objects.filter(owner=owner)
