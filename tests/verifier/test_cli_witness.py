"""`hallmark witness` as a real process: prints its vkey, cosigns, stops cleanly on SIGTERM."""
import signal
import subprocess
import sys
import urllib.request

from verifier.evidence.cosignature import parse_witness_vkey, verify_cosignatures
from verifier.evidence.identity import Identity
from verifier.evidence.merkle import MemoryLog
from verifier.evidence.note import sign_checkpoint, vkey
from verifier.witness.client import request_body

LOG = Identity.from_seed(bytes([5]) * 32)


def test_the_witness_command_cosigns_and_stops_on_sigterm(tmp_path):
    log = MemoryLog()
    log.append(b"one")
    note = sign_checkpoint("log.test/x", 1, log.root(), LOG)
    args = [sys.executable, "-m", "verifier.cli", "witness", "--name", "w.test/1",
            "--key", str(tmp_path / "w.key"), "--state", str(tmp_path / "state.json"),
            "--log", vkey("log.test/x", LOG.public_key), "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("created the witness key")
        witness = parse_witness_vkey(lines[1].split()[1])
        url = lines[2].split("listening on ")[1].strip()
        req = urllib.request.Request(url, data=request_body(0, [], note), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert verify_cosignatures(note + resp.read().decode(), [witness])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    again = subprocess.run([*args[:-2], "--print-vkey"], capture_output=True, text=True)
    assert again.stdout.strip() == witness.vkey  # the same key, kept in the key file


def test_the_witness_command_needs_a_log(tmp_path, capsys):
    from verifier.cli import main

    assert main(["witness", "--name", "w.test/1", "--key", str(tmp_path / "k"),
                 "--state", str(tmp_path / "s")]) == 2
    assert "--log VKEY" in capsys.readouterr().err
