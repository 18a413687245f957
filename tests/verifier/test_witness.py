"""The witness (c2sp.org/tlog-witness add-checkpoint) over real HTTP on 127.0.0.1.

Each status code of the spec is produced by a real request to a real server; a forked log
(two roots for one size, a rewritten entry, a shrinking tree) is refused.
"""
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.evidence.cosignature import Witness as WitnessKey
from verifier.evidence.cosignature import verify_cosignatures
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity
from verifier.evidence.merkle import MemoryLog
from verifier.evidence.note import sign_checkpoint, split_note
from verifier.witness.client import WitnessConflict, WitnessError, add_checkpoint, request_body
from verifier.witness.protocol import Witness
from verifier.witness.server import make_server
from verifier.witness.state import WitnessState

ORIGIN = "registry.test/log"
LOG_KEY = Identity.from_seed(bytes(range(32)))
WITNESS_KEY = Identity.from_seed(bytes([7]) * 32)
ME = WitnessKey("witness.test/w1", WITNESS_KEY.public_key)


def _log(n: int, tag: bytes = b"entry") -> MemoryLog:
    log = MemoryLog()
    for i in range(n):
        log.append(tag + b" %d" % i)
    return log


def _note(log: MemoryLog, size: int | None = None, key: Identity = LOG_KEY,
          origin: str = ORIGIN) -> str:
    size = log.size if size is None else size
    return sign_checkpoint(origin, size, log.root(size), key)


class Served:
    def __init__(self, state: Path) -> None:
        self.state = WitnessState(state)
        self.witness = Witness(ME.name, WITNESS_KEY, {ORIGIN: [LOG_KEY.public_key]}, self.state,
                               clock=lambda: 1_700_000_000)
        self.server = make_server(self.witness)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def post(self, body: bytes, path: str = "/add-checkpoint") -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=10)
        try:
            conn.request("POST", path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read().decode()
        finally:
            conn.close()

    def add(self, old: int, proof: list[bytes], note: str) -> tuple[int, str, str]:
        return self.post(request_body(old, proof, note))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "state.json")
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_it_cosigns_a_first_checkpoint_with_a_valid_timestamped_cosignature(served):
    log = _log(5)
    status, _, body = served.add(0, [], _note(log))
    assert status == 200
    [cosigned] = verify_cosignatures(_note(log) + body, [ME])
    assert cosigned.timestamp == 1_700_000_000
    assert body.startswith("\u2014 witness.test/w1 ")


def test_it_cosigns_a_consistent_extension_and_persists_the_new_size(served):
    log = _log(5)
    assert served.add(0, [], _note(log))[0] == 200
    for i in range(6):
        log.append(b"more %d" % i)
    status, _, _ = served.add(5, log.consistency_proof(5), _note(log))
    assert status == 200
    assert served.state.read()[ORIGIN].size == 11


def test_it_recosigns_the_same_checkpoint(served):
    log = _log(3)
    assert served.add(0, [], _note(log))[0] == 200
    assert served.add(3, [], _note(log))[0] == 200


def test_it_answers_409_with_its_latest_size_when_the_old_size_is_stale(served):
    log = _log(4)
    assert served.add(0, [], _note(log))[0] == 200
    log.append(b"x")
    status, ctype, body = served.add(2, log.consistency_proof(2), _note(log))
    assert (status, ctype, body) == (409, "text/x.tlog.size", "4\n")


def test_it_refuses_a_second_root_for_the_same_size_with_409(served):
    honest, forked = _log(4), _log(4, tag=b"rewritten")
    assert served.add(0, [], _note(honest))[0] == 200
    status, ctype, body = served.add(4, [], _note(forked))
    assert (status, ctype, body) == (409, "text/x.tlog.size", "4\n")
    assert served.state.read()[ORIGIN].root == honest.root()
    [kept] = [json.loads(line) for line in served.state.evidence_path.read_text().splitlines()]
    assert (kept["status"], kept["note"]) == (409, _note(forked))  # proof of equivocation


def test_it_refuses_a_rewritten_history_with_422(served):
    honest = _log(4)
    assert served.add(0, [], _note(honest))[0] == 200
    forked = _log(4, tag=b"rewritten")
    forked.append(b"new")
    status, _, body = served.add(4, forked.consistency_proof(4), _note(forked))
    assert status == 422
    assert "does not verify" in body
    assert served.state.read()[ORIGIN].size == 4
    assert json.loads(served.state.evidence_path.read_text())["note"] == _note(forked)


def test_it_refuses_a_shrinking_tree_with_400(served):
    log = _log(6)
    assert served.add(0, [], _note(log))[0] == 200
    status, _, body = served.add(6, [], _note(log, size=3))
    assert status == 400
    assert "never shrinks" in body
    assert served.state.read()[ORIGIN].size == 6


def test_it_answers_404_for_a_log_it_does_not_follow(served):
    status, _, body = served.add(0, [], _note(_log(2), origin="other.test/log"))
    assert status == 404
    assert "unknown log" in body


def test_it_answers_403_for_a_checkpoint_signed_by_another_key(served):
    stranger = Identity.from_seed(bytes([9]) * 32)
    status, _, _ = served.add(0, [], _note(_log(2), key=stranger))
    assert status == 403


def test_it_answers_403_for_a_changed_checkpoint(served):
    note = _note(_log(2))
    text, _ = split_note(note)
    tampered = note.replace("\n2\n", "\n3\n", 1)
    assert tampered != note and text
    assert served.add(0, [], tampered)[0] == 403


@pytest.mark.parametrize("body", [
    b"old 01\n\n", b"new 0\n\nx\n", b"old 0\nnot-base64!\n\n", b"\xff\xfe",
    b"old 0\n", b"old 0\n\nregistry.test/log\n2\n\n",
])
def test_it_answers_400_for_a_malformed_body(served, body):
    assert served.post(body)[0] == 400


def test_it_answers_400_for_a_proof_with_old_size_zero(served):
    log = _log(4)
    assert served.add(0, [log.root()], _note(log))[0] == 400


def test_it_answers_400_for_too_many_proof_lines(served):
    log = _log(4)
    assert served.add(0, [log.root()] * 64, _note(log))[0] == 400


def test_it_answers_404_on_another_path(served):
    assert served.post(b"old 0\n\n", path="/elsewhere")[0] == 404


def test_its_state_survives_a_restart(served, tmp_path):
    log = _log(3)
    assert served.add(0, [], _note(log))[0] == 200
    again = Witness(ME.name, WITNESS_KEY, {ORIGIN: [LOG_KEY.public_key]},
                    WitnessState(tmp_path / "state.json"))
    assert again.add_checkpoint(request_body(0, [], _note(log))).status == 409


def test_a_corrupt_state_file_is_an_error_naming_the_fix(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(EvidenceError, match="restore it from a backup"):
        WitnessState(tmp_path / "state.json").read()


def test_the_client_returns_checked_cosignature_lines(served):
    log = _log(3)
    lines = add_checkpoint(served.url, ME, 0, [], _note(log))
    assert verify_cosignatures(_note(log) + lines, [ME])


def test_the_client_raises_a_conflict_with_the_witness_size(served):
    log = _log(3)
    add_checkpoint(served.url, ME, 0, [], _note(log))
    with pytest.raises(WitnessConflict) as e:
        add_checkpoint(served.url, ME, 0, [], _note(log))
    assert e.value.latest_size == 3


def test_the_client_refuses_an_answer_signed_by_another_witness(served):
    other = WitnessKey(ME.name, Identity.from_seed(bytes([3]) * 32).public_key)
    with pytest.raises(WitnessError, match="without a valid cosignature"):
        add_checkpoint(served.url, other, 0, [], _note(_log(3)))


def test_the_client_reports_an_unreachable_witness():
    with pytest.raises(WitnessError, match="unreachable"):
        add_checkpoint("http://127.0.0.1:9", ME, 0, [], _note(_log(1)), timeout=2)
