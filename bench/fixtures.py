"""Owners, marked models and suspects for the scaled-mode benchmarks (chaos, drain).

Reuses the demo's helpers: each owner trains a small MLP on digits marked with uchida +
trigger_set (about 3 CPU-s), registers it and both commitments over the HTTP API
(`verifier.client`). The suspects are ONNX files served on 127.0.0.1: a fine-tuned copy of
each owner's model ("stolen", expected attributed to that owner) and a freshly initialised
MLP ("independent", expected not attributed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.stack import say

PASSWORD = "benchmark password, not for production"


@dataclass(frozen=True)
class Suspect:
    name: str
    url: str
    owner_keyid: str | None  # the owner it should be attributed to; None: nobody


@dataclass(frozen=True)
class Registered:
    token: str  # API token of the first owner (submits the suspects)
    suspects: list[Suspect]
    commitments: int


def make_suspects(folder: Path, models: int) -> tuple[list, list[Path]]:
    """Train `models` marked models; write stolen-<i>.onnx and independent.onnx into `folder`."""
    from registry.demo import export_onnx, train_marked_model
    from verifier import toy
    from verifier.evaluation import attacks

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    marked = []
    for i in range(models):
        m = train_marked_model(seed=i)
        stolen = attacks.finetune(m.model, m.split, epochs=3, lr=1e-3, seed=i + 7)
        export_onnx(stolen, folder / f"stolen-{i}.onnx")
        marked.append(m)
    torch.manual_seed(1000)
    export_onnx(toy.MLP(), folder / "independent.onnx")
    return marked, sorted(folder.glob("*.onnx"))


def register(base_url: str, files_url: str, marked: list) -> Registered:
    """One owner per marked model, each registering its model and commitments over the API."""
    from verifier.client import Client

    suspects, first_token, count = [], None, 0
    for i, m in enumerate(marked):
        owner = Client(base_url, timeout=60)
        me = owner.signup(f"owner{i}", PASSWORD)
        model = owner.register_model(f"digits-mlp-{i}", version="1")
        for blob in m.keys.values():
            owner.add_commitment(model["id"], blob)
            count += 1
        suspects.append(Suspect(f"stolen-{i}", f"{files_url}/stolen-{i}.onnx", me["keyid"]))
        first_token = first_token or owner.token
    suspects.append(Suspect("independent", f"{files_url}/independent.onnx", None))
    say(f"registered {len(marked)} owners, {count} commitments; {len(suspects)} suspects served")
    assert first_token is not None
    return Registered(first_token, suspects, count)
