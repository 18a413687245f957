"""Hub suspects against the loopback Hub + CDN: revision pinning, guarded range reads through
redirects, per-host caching by repo@commit, and the fall back to whole downloads."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from registry.hubrefs import HubRef
from registry.models import CheckResult, Suspect, Verification
from registry.submission import submit
from tests.hubserver import HubServer, write_sharded
from tests.registry.conftest import Actor, make_actor
from verifier import toy
from verifier.models.ranged import RangedTensors, subject_digest
from verifier.schemes import uchida
from workers import suspects, tasks
from workers.hub import suspect as hub_suspect
from workers.hub.ranges import RangeIgnored, get_range
from workers.hub.snapshot import plan, resolve, resolve_url
from workers.hub.store import HubStore
from workers.netguard import FetchError, FetchPolicy

POLICY = FetchPolicy(allow_loopback=True, timeout_seconds=30)


def _model() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in toy.MLP().state_dict().items()}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as h:
        write_sharded(h.repo_dir("acme/mlp"), _model(), shards=3)
        yield h


def _snap(hub: HubServer, repo: str = "acme/mlp", revision: str = "main"):  # type: ignore[no-untyped-def]
    return resolve(HubRef(repo, revision, ""), hub.endpoint, hub.token, POLICY)


def test_a_revision_resolves_to_the_commit_sha_with_sizes_and_claimed_digests(hub):
    snap = _snap(hub)
    assert snap.commit == hub.commit("acme/mlp")
    files = {f.name: f for f in snap.files}
    shard = files["model-00001-of-00003.safetensors"]
    assert shard.size == (hub.repo_dir("acme/mlp") / shard.name).stat().st_size
    assert shard.claimed_sha256 == hub.sha256(hub.repo_dir("acme/mlp") / shard.name)
    assert _snap(hub, revision=snap.commit).commit == snap.commit


@pytest.mark.parametrize(("repo", "revision", "message"), [
    ("acme/nothing", "main", "no such model repo"),
    ("acme/mlp", "v9", "no such branch, tag or commit"),
])
def test_unknown_repos_and_revisions_are_refused_for_good(hub, repo, revision, message):
    with pytest.raises(FetchError, match=message) as e:
        _snap(hub, repo, revision)
    assert e.value.permanent


def test_a_worker_in_hub_offline_mode_is_refused_for_good_naming_the_variable(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 at import
    with pytest.raises(FetchError, match="unset it on workers that verify Hub suspects") as e:
        _snap(hub)
    assert e.value.permanent


def test_a_gated_repo_needs_the_token_setting(hub):
    hub.token = "s3cret"
    with pytest.raises(FetchError, match="HALLMARK_HF_TOKEN") as e:
        resolve(HubRef("acme/mlp", "main", ""), hub.endpoint, None, POLICY)
    assert e.value.permanent
    assert _snap(hub).commit == hub.commit("acme/mlp")


def test_a_hub_that_cannot_be_reached_is_a_transient_failure(hub):
    endpoint = hub.endpoint
    hub.close()
    with pytest.raises(FetchError, match="retry later") as e:
        resolve(HubRef("acme/mlp", "main", ""), endpoint, None, POLICY)
    assert not e.value.permanent


def test_a_gated_repo_sends_the_token_to_the_hub_and_never_to_the_cdn(hub):
    hub.token = "s3cret"
    snap = _snap(hub)
    url = resolve_url(hub.endpoint, "acme/mlp", snap.commit, "model-00001-of-00003.safetensors")
    with pytest.raises(FetchError, match="HTTP 401"):
        get_range(url, 0, 8, POLICY)
    assert len(get_range(url, 0, 8, POLICY, token="s3cret")) == 8
    assert any(r.startswith("hub GET /acme/mlp/resolve/") and "with-token" in r
               for r in hub.requests)
    assert not any(r.startswith("cdn") and "with-token" in r for r in hub.requests)


def test_a_range_follows_the_redirect_to_the_cdn_and_returns_exactly_those_bytes(hub):
    snap = _snap(hub)
    name = "model-00002-of-00003.safetensors"
    data = (hub.repo_dir("acme/mlp") / name).read_bytes()
    got = get_range(resolve_url(hub.endpoint, "acme/mlp", snap.commit, name), 8, 40, POLICY)
    assert got == data[8:40]
    assert any(r.startswith("hub GET /acme/mlp/resolve/") for r in hub.requests)
    assert any(r.startswith("cdn GET /blobs/") and r.endswith("bytes=8-39") for r in hub.requests)


def test_a_redirect_to_a_private_address_is_refused_before_connecting(hub):
    snap = _snap(hub)
    hub.private_redirect = True
    url = resolve_url(hub.endpoint, "acme/mlp", snap.commit, "model-00001-of-00003.safetensors")
    with pytest.raises(FetchError, match=r"10\.255\.255\.1, a private address") as e:
        get_range(url, 0, 8, POLICY)
    assert e.value.permanent
    assert not any(r.startswith("cdn") for r in hub.requests)


def test_a_server_that_ignores_range_is_detected(hub):
    snap = _snap(hub)
    hub.ignore_range = True
    url = resolve_url(hub.endpoint, "acme/mlp", snap.commit, "model-00001-of-00003.safetensors")
    with pytest.raises(RangeIgnored, match="ignores Range"):
        get_range(url, 0, 8, POLICY)


def _tensors(hub: HubServer, cache: Path, policy: FetchPolicy = POLICY,
             full: bool = False) -> tuple[RangedTensors, HubStore]:
    from verifier.models.ranged import read_header

    snap = _snap(hub)
    store = HubStore(snap, cache, hub.endpoint, None, policy, full_download=full)
    index = json.loads((hub.repo_dir("acme/mlp") / "model.safetensors.index.json").read_text())
    shards = [snap.file(n) for n in sorted(set(index["weight_map"].values()))]
    return RangedTensors([read_header(f.name, f.size, store.read) for f in shards],
                         store.read), store


def test_only_the_headers_and_the_tensors_asked_for_cross_the_network(hub, tmp_path):
    t, _ = _tensors(hub, tmp_path / "host-a")
    assert torch.equal(t["fc2.weight"], _model()["fc2.weight"])
    ev = t.evidence()
    assert list(ev["tensors"]) == ["fc2.weight"]
    assert hub.bytes_served == ev["bytes_read"] < ev["bytes_total"]


def test_the_same_repo_at_the_same_commit_is_read_once_per_host(hub, tmp_path):
    first, _ = _tensors(hub, tmp_path / "host-a")
    first["fc2.weight"]
    served = hub.bytes_served
    again, _ = _tensors(hub, tmp_path / "host-a")  # another check on the same host
    assert torch.equal(again["fc2.weight"], first["fc2.weight"])
    assert hub.bytes_served == served
    other, _ = _tensors(hub, tmp_path / "host-b")  # another host reads it itself
    other["fc2.weight"]
    assert hub.bytes_served == 2 * served


def test_a_server_that_ignores_range_falls_back_to_whole_files_within_the_cap(hub, tmp_path):
    hub.ignore_range = True
    t, store = _tensors(hub, tmp_path / "host-a")
    assert torch.equal(t["fc3.weight"], _model()["fc3.weight"])
    assert sorted(store.downloaded) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert t.evidence()["tensors"]["fc3.weight"]["sha256"]


def test_a_whole_download_over_the_cap_is_refused_naming_the_setting(hub, tmp_path):
    hub.ignore_range = True
    small = FetchPolicy(allow_loopback=True, max_bytes=1000)
    with pytest.raises(FetchError, match="HALLMARK_FETCH_MAX_BYTES") as e:
        _tensors(hub, tmp_path / "host-a", small)
    assert e.value.permanent
    assert not list((tmp_path / "host-a").rglob("model-*"))  # nothing partial kept


def test_one_range_over_the_cap_is_refused_before_it_is_requested(hub, tmp_path):
    snap = _snap(hub)
    store = HubStore(snap, tmp_path / "c", hub.endpoint, None,
                     FetchPolicy(allow_loopback=True, max_bytes=1000))
    hub.reset_counters()
    with pytest.raises(FetchError, match="over the 1000-byte cap") as e:
        store.read("model-00001-of-00003.safetensors", 0, 1001)
    assert e.value.permanent and hub.requests == []
    assert len(store.read("model-00001-of-00003.safetensors", 0, 1000)) == 1000


def test_a_file_that_differs_from_the_hubs_claimed_digest_is_refused(hub, tmp_path):
    snap = _snap(hub)  # listing taken, then the file changes under the same commit
    shard = hub.repo_dir("acme/mlp") / "model-00001-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    store = HubStore(snap, tmp_path / "c", hub.endpoint, None, POLICY, full_download=True)
    with pytest.raises(FetchError, match="the server changed the file"):
        store.read(shard.name, 0, 8)


def test_layouts_sharded_single_adapter_onnx_and_nothing(hub):
    assert plan(_snap(hub), HubRef("acme/mlp", "main", "")).index is not None
    single = hub.repo_dir("acme/one")
    single.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(single / "model.safetensors"))
    (single / "README.md").write_text("hi")
    p = plan(_snap(hub, "acme/one"), HubRef("acme/one", "main", ""))
    assert p.mode == "ranged" and [f.name for f in p.files] == ["model.safetensors"]
    adapter = hub.repo_dir("acme/lora")
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    save_file({"w": torch.ones(2)}, str(adapter / "adapter_model.safetensors"))
    (adapter / "README.md").write_text("hi")
    p = plan(_snap(hub, "acme/lora"), HubRef("acme/lora", "main", ""))
    assert p.mode == "folder" and sorted(f.name for f in p.files) == [
        "adapter_config.json", "adapter_model.safetensors"]
    empty = hub.repo_dir("acme/docs")
    empty.mkdir(parents=True)
    (empty / "README.md").write_text("hi")
    with pytest.raises(FetchError, match="holds no model this registry reads"):
        plan(_snap(hub, "acme/docs"), HubRef("acme/docs", "main", ""))


@pytest.mark.django_db
def test_a_hub_suspect_is_pinned_at_fetch_and_checked_by_range_reads(
        hub, settings, tmp_path, django_capture_on_commit_callbacks):
    alice, key = _alice_with_an_uchida_key(hub, settings, tmp_path / "host-a")
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, "https://huggingface.co/acme/mlp/tree/main")
        tasks.fetch.run(v.pk)
    v.refresh_from_db()
    s = Suspect.objects.get(pk=v.suspect_id)
    assert v.status == "checking", v.error_message
    assert (s.kind, s.hub_repo, s.hub_commit) == ("hub", "acme/mlp", hub.commit("acme/mlp"))
    assert {u["name"] for u in s.hub_files} == {
        "model.safetensors.index.json", *(f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3))}
    headers = {u["name"]: {"sha256": u["header_sha256"], "size": u["size"]}
               for u in s.hub_files if "header_sha256" in u}
    assert s.sha256 == subject_digest({"headers": headers, "tensors": {}})

    settings.HALLMARK_CACHE_DIR = tmp_path / "host-b"
    hub.reset_counters()
    loaded = suspects.load(s)
    assert isinstance(loaded.weights, RangedTensors)
    result = uchida.test(loaded, uchida.Key.from_bytes(key))
    assert result.applicable
    read = set(loaded.weights.evidence()["tensors"])
    assert {"fc1.weight", "fc2.weight"} <= read and not read & {"fc3.weight", "fc3.bias"}
    ev = loaded.weights.evidence()
    assert hub.bytes_served == ev["bytes_read"] < ev["bytes_total"]  # headers, those tensors
    assert not any(r.startswith("hub GET /api/") for r in hub.requests)  # pinned: no lookup


@pytest.mark.django_db
def test_a_hub_commit_that_changed_after_the_first_fetch_fails_the_check(
        hub, settings, tmp_path, django_capture_on_commit_callbacks):
    settings.HALLMARK_HF_ENDPOINT = hub.endpoint
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-a"
    alice = make_actor("alice")
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, "hf://acme/mlp")
        tasks.fetch.run(v.pk)
    s = Suspect.objects.get(pk=Verification.objects.get(pk=v.pk).suspect_id)
    shard = hub.repo_dir("acme/mlp") / "model-00002-of-00003.safetensors"
    size = shard.stat().st_size
    save_file({k: v.contiguous() for k, v in _model().items() if k in ("fc1.weight", "fc3.bias")},
              str(shard), metadata={"format": "px"})  # same size and commit, other header
    assert shard.stat().st_size == size and hub.commit("acme/mlp") == s.hub_commit
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-b"
    with pytest.raises(suspects.SuspectChanged, match="model-00002-of-00003.safetensors.*pinned"):
        suspects.load(s)


def _adapter(folder: Path, value: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["fc1"]}))
    save_file({"base_model.model.fc1.lora_A.weight": torch.full((2, 64), value),
               "base_model.model.fc1.lora_B.weight": torch.zeros(96, 2)},
              str(folder / "adapter_model.safetensors"))


@pytest.mark.django_db
def test_an_adapter_repo_is_downloaded_whole_pinned_and_refused_when_it_changes(
        hub, settings, tmp_path, django_capture_on_commit_callbacks):
    _adapter(hub.repo_dir("acme/lora"), 1.0)
    (hub.repo_dir("acme/lora") / "README.md").write_text("# card\n")
    settings.HALLMARK_HF_ENDPOINT = hub.endpoint
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-a"
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(make_actor("alice").owner, "hf://acme/lora")
        tasks.fetch.run(v.pk)
    s = Suspect.objects.get(pk=Verification.objects.get(pk=v.pk).suspect_id)
    assert s.format == "peft-adapter (hub)"
    assert sorted(u["name"] for u in s.hub_files) == ["adapter_config.json",
                                                      "adapter_model.safetensors"]
    assert not any("README" in r for r in hub.requests)  # documentation is never fetched
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-b"
    assert "base_model.model.fc1.lora_A.weight" in suspects.load(s).weights
    _adapter(hub.repo_dir("acme/lora"), 2.0)  # same sizes, same commit, other bytes
    assert hub.commit("acme/lora") == s.hub_commit
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-c"
    with pytest.raises(FetchError, match="the server changed the file"):
        suspects.load(s)


@pytest.mark.django_db
def test_tensor_bytes_that_differ_between_hosts_make_the_check_an_error_naming_the_range(
        hub, settings, tmp_path, django_capture_on_commit_callbacks):
    alice, _ = _alice_with_an_uchida_key(hub, settings, tmp_path / "host-a")
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, "hf://acme/mlp")
        tasks.fetch.run(v.pk)
        s = Suspect.objects.get(pk=Verification.objects.get(pk=v.pk).suspect_id)
        settings.HALLMARK_CACHE_DIR = tmp_path / "host-b"  # reads and pins fc2.weight
        assert torch.equal(suspects.load(s).weights["fc2.weight"], _model()["fc2.weight"])
        assert s.pinned_ranges.count() > 0
        shard = hub.repo_dir("acme/mlp") / "model-00001-of-00003.safetensors"
        data = bytearray(shard.read_bytes())
        data[-1] ^= 0x40  # the last byte of fc2.weight: header, size and commit unchanged
        shard.write_bytes(bytes(data))
        settings.HALLMARK_CACHE_DIR = tmp_path / "host-c"
        with pytest.raises(hub_suspect.SuspectChanged, match="the Hub served other bytes"):
            suspects.load(s).weights["fc2.weight"]
        tasks.check.run(v.pk, CheckResult.objects.get(verification_id=v.pk).commitment_id)
    row = CheckResult.objects.get(verification_id=v.pk)
    assert row.status == "error" and "the Hub served other bytes" in row.error


def _alice_with_an_uchida_key(hub, settings,  # type: ignore[no-untyped-def]
                              cache: Path) -> tuple[Actor, bytes]:
    """Alice and the bytes of her one registered uchida key (fc1 + fc2 of a toy MLP); this
    host (its cache folder) reads Hub suspects from the loopback Hub."""
    settings.HALLMARK_HF_ENDPOINT = hub.endpoint
    settings.HALLMARK_CACHE_DIR = cache
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    torch.manual_seed(0)
    key = uchida.generate_key(uchida.Params(bits=128, layers=("fc1.weight", "fc2.weight")), 1,
                              model=toy.MLP()).to_bytes()
    f = io.BytesIO(key)
    f.name = "k"
    r = alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
    assert r.status_code == 201, r.json()
    return alice, key
