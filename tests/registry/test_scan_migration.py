"""Migration 0007_scan_index backfills the scan index of commitments made before it."""
from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.keys import uchida_key_blob
from verifier.schemes import uchida

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE, AFTER = [("registry", "0006_witnesses_owners_countersignatures")], [("registry", "0007_scan_index")]


def _migrate(target):  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def test_existing_commitments_are_indexed_from_their_stored_public_params() -> None:
    apps = _migrate(BEFORE)
    try:
        user = apps.get_model("auth", "User").objects.create(username="old")
        owner = apps.get_model("registry", "Owner").objects.create(
            user=user, public_key=b"\0" * 32, keyid="a" * 64)
        model = apps.get_model("registry", "RegisteredModel").objects.create(
            owner=owner, name="m", envelope="")
        Commitment = apps.get_model("registry", "Commitment")
        key = uchida.Key.from_bytes(uchida_key_blob(seed=1))
        rows = {"uchida": key.public_params(), "trigger_set": {"n": 100},
                "gone": {}, "broken": {"shapes": "not a list"}}
        for n, (name, params) in enumerate(rows.items()):
            Commitment.objects.create(
                model=model, scheme="uchida" if name == "broken" else name, public_params=params,
                digest=f"{n:064x}", salt=b"s", key_sha256="0" * 64, sealed_key=b"k", envelope="",
                log_index=n)
        apps = _migrate(AFTER)
        got = {c.digest: (c.needs, c.index_shape, c.requirement) for c in
               apps.get_model("registry", "Commitment").objects.all()}
    finally:
        _migrate(executor_latest())
    assert got[f"{0:064x}"] == ("weights", "96x96", {
        "access": "weights", "shapes": [list(s) for s in key.shapes]})
    assert got[f"{1:064x}"] == ("predict", "", {"access": "predict", "shapes": []})
    # an unknown scheme or unreadable params stay a candidate of every scan
    assert got[f"{2:064x}"] == got[f"{3:064x}"] == ("any", "", {})


def executor_latest():  # type: ignore[no-untyped-def]
    return MigrationExecutor(connection).loader.graph.leaf_nodes()
