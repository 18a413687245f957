"""`hallmark countersign`: audit first, then sign the envelope's PAE with the local key."""
import json

from tests.verifier.report_factory import ALICE, MALLORY, ORIGIN, REGISTRY, standard_report
from verifier.cli import main
from verifier.evidence import report as R
from verifier.evidence.identity import write_private_key
from verifier.evidence.note import vkey
from verifier.evidence.owners import verify_countersignature


def _files(tmp_path, identity, report):
    key, path = tmp_path / "owner.key", tmp_path / "report.json"
    write_private_key(key, identity)
    path.write_bytes(R.render_report(report))
    return str(key), str(path)


def test_it_prints_a_countersignature_that_verifies_over_the_envelope(tmp_path, capsys):
    _, report = standard_report()
    key, path = _files(tmp_path, ALICE, report)
    assert main(["countersign", path, "--key", key, "--registry-key",
                 vkey(ORIGIN, REGISTRY.public_key)]) == 0
    signed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert signed["keyid"] == ALICE.keyid
    verify_countersignature(report["envelope"], ALICE.public_key, signed["sig"])


def test_it_refuses_a_report_that_fails_its_audit(tmp_path, capsys):
    _, report = standard_report()
    report["envelope"]["signatures"][0]["sig"] = report["envelope"]["signatures"][1]["sig"]
    key, path = _files(tmp_path, ALICE, report)
    assert main(["countersign", path, "--key", key]) == 2
    assert "refusing to countersign" in capsys.readouterr().err


def test_it_refuses_a_key_that_is_not_an_owner_of_the_report(tmp_path, capsys):
    _, report = standard_report()
    key, path = _files(tmp_path, MALLORY, report)
    assert main(["countersign", path, "--key", key]) == 2
    assert "not one of the report's owners" in capsys.readouterr().err


def test_sending_needs_the_report_id_and_a_token(tmp_path, capsys):
    _, report = standard_report()
    key, path = _files(tmp_path, ALICE, report)
    assert main(["countersign", path, "--key", key, "--registry", "http://127.0.0.1:9"]) == 2
    assert "--report-id and --token" in capsys.readouterr().err
