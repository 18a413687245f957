"""HALLMARK_WITNESSES: "URL VKEY" pairs, checked at start-up with a message naming the fix."""
import pytest

from registry.env import ConfigError, envwitnesses
from verifier.evidence.cosignature import Witness
from verifier.evidence.note import vkey

W = Witness("w.test/1", bytes(range(32)))


def test_it_reads_url_and_vkey_pairs(monkeypatch):
    monkeypatch.setenv("HALLMARK_WITNESSES", f"http://127.0.0.1:7380 {W.vkey}, "
                                             f"https://w2.example/prefix {W.vkey}")
    assert envwitnesses("HALLMARK_WITNESSES") == [("http://127.0.0.1:7380", W.vkey),
                                                  ("https://w2.example/prefix", W.vkey)]
    monkeypatch.setenv("HALLMARK_WITNESSES", "")
    assert envwitnesses("HALLMARK_WITNESSES") == []


@pytest.mark.parametrize("value,match", [
    (W.vkey, "not 'URL VKEY'"),
    ("ftp://x " + W.vkey, "not 'URL VKEY'"),
    ("http://x " + vkey("w.test/1", bytes(range(32))), "signature type 0x04"),  # a log key
    ("http://x " + W.vkey[:-2] + "AA", "--print-vkey"),
])
def test_a_malformed_entry_names_the_variable_and_the_fix(monkeypatch, value, match):
    monkeypatch.setenv("HALLMARK_WITNESSES", value)
    with pytest.raises(ConfigError, match=match) as e:
        envwitnesses("HALLMARK_WITNESSES")
    assert "HALLMARK_WITNESSES" in str(e.value)
