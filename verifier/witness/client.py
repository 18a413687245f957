"""What a log calls to obtain a witness's cosignature (c2sp.org/tlog-witness add-checkpoint)."""
from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence

from verifier.evidence.cosignature import Witness, verify_cosignatures
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64

_MAX_ANSWER = 64 * 1024


class WitnessError(Exception):
    """A witness refused a checkpoint or could not be reached; `status` is its HTTP code
    (0 when no answer came)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class WitnessConflict(WitnessError):
    """409: the witness's latest cosigned size is not the old size sent (`latest_size`)."""

    def __init__(self, message: str, latest_size: int) -> None:
        super().__init__(message, 409)
        self.latest_size = latest_size


def request_body(old_size: int, proof: Sequence[bytes], checkpoint_note: str) -> bytes:
    """The add-checkpoint body: "old N", the proof hashes, an empty line, the checkpoint."""
    lines = [f"old {old_size}", *(b64(bytes(h)) for h in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint_note).encode()


def add_checkpoint(url: str, witness: Witness, old_size: int, proof: Sequence[bytes],
                   checkpoint_note: str, timeout: float = 5.0) -> str:
    """Ask the witness at `url` (its submission prefix) to cosign `checkpoint_note`.

    Returns:
        The witness's cosignature line(s) ("— name base64\\n"), checked against its key.

    Raises:
        WitnessConflict: the witness has cosigned another size (retry from `latest_size`).
        WitnessError: any other refusal, an unreachable witness, or a cosignature that is not
            a valid one by `witness`.
    """
    req = urllib.request.Request(url.rstrip("/") + "/add-checkpoint", method="POST",
                                 data=request_body(old_size, proof, checkpoint_note),
                                 headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (operator's URL)
            answer = resp.read(_MAX_ANSWER).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        text = e.read(_MAX_ANSWER).decode("utf-8", "replace").strip()
        if e.code == 409 and text.isdigit():
            raise WitnessConflict(f"witness {witness.name} has cosigned size {text}, not "
                                  f"{old_size}", int(text)) from None
        raise WitnessError(f"witness {witness.name} refused the checkpoint ({e.code}): "
                           f"{text[:200]}", e.code) from None
    except (urllib.error.URLError, OSError) as e:
        raise WitnessError(f"witness {witness.name} at {url} is unreachable: "
                           f"{getattr(e, 'reason', e)}") from None
    try:
        if not verify_cosignatures(checkpoint_note + answer, [witness]):
            raise EvidenceError("no cosignature by its key in the answer")
    except EvidenceError as e:
        raise WitnessError(f"witness {witness.name} answered without a valid cosignature: "
                           f"{e}") from None
    mine = f"\u2014 {witness.name} "
    return "".join(ln for ln in answer.splitlines(keepends=True) if ln.startswith(mine))
