"""`hallmark witness`: run a transparency-log witness (c2sp.org/tlog-witness) for the registry.

    hallmark witness --name witness.example/w1 --key witness.key --state witness.json \\
        --log "$(curl -s https://registry.example/api/log/vkey)" --listen 127.0.0.1:7380

Prints the witness's vkey (give it to the registry's HALLMARK_WITNESSES and to auditors'
`hallmark audit --witness`), then serves until SIGTERM or Ctrl-C.
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from verifier.cli import CommandError
from verifier.evidence.cosignature import Witness as WitnessKey
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, read_private_key, write_private_key
from verifier.evidence.note import parse_vkey
from verifier.witness.protocol import Witness
from verifier.witness.server import make_server
from verifier.witness.state import WitnessState

HELP = "run a witness that cosigns the registry's log checkpoints and refuses forks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True,
                        help="the witness's key name, e.g. witness.example/w1")
    parser.add_argument("--key", required=True, metavar="FILE",
                        help="the witness's private key file (created, mode 0600, if missing)")
    parser.add_argument("--state", required=True, metavar="FILE",
                        help="where the latest cosigned checkpoint of each log is kept")
    parser.add_argument("--log", metavar="VKEY", action="append", default=[],
                        help="a log to follow: its checkpoint vkey (origin+hex+base64); "
                             "repeatable")
    parser.add_argument("--log-url", metavar="URL", action="append", default=[],
                        help="fetch a log's vkey at start-up (e.g. http://web:8000/api/log/vkey),"
                             " waiting up to 120 s for it; trust on first use, prefer --log")
    parser.add_argument("--listen", default="127.0.0.1:7380", metavar="HOST:PORT",
                        help="address to serve on (default 127.0.0.1:7380)")
    parser.add_argument("--prefix", default="", help="URL prefix before /add-checkpoint")
    parser.add_argument("--print-vkey", action="store_true",
                        help="print the witness's vkey and exit")


def _identity(path: str) -> Identity:
    try:
        if not Path(path).exists():
            identity = Identity.generate()
            write_private_key(path, identity)
            print(f"created the witness key {path}")
            return identity
        return read_private_key(path)
    except (EvidenceError, OSError) as e:
        raise CommandError(f"witness key {path}: {e}") from None


def _fetch_vkey(url: str, wait: float = 120.0) -> str:
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (operator's URL)
                return str(resp.read(4096).decode("utf-8").strip())
        except (urllib.error.URLError, OSError) as e:
            if time.monotonic() > deadline:
                raise CommandError(f"cannot fetch the log vkey from {url}: "
                                   f"{getattr(e, 'reason', e)}") from None
            time.sleep(1)


def run(args: argparse.Namespace) -> int:
    identity = _identity(args.key)
    try:
        me = WitnessKey(args.name, identity.public_key)
        vkey = me.vkey
    except EvidenceError as e:
        raise CommandError(f"--name: {e}") from None
    if args.print_vkey:
        print(vkey)
        return 0
    logs: dict[str, list[bytes]] = {}
    for text in [*args.log, *(_fetch_vkey(u) for u in args.log_url)]:
        try:
            origin, key = parse_vkey(text)
        except EvidenceError as e:
            raise CommandError(f"--log: {e}") from None
        logs.setdefault(origin, []).append(key)
    if not logs:
        raise CommandError("no log to follow: pass --log VKEY (the registry's /api/log/vkey)")
    host, _, port = args.listen.rpartition(":")
    try:
        server = make_server(Witness(args.name, identity, logs, WitnessState(args.state)),
                             host.strip("[]") or "127.0.0.1", int(port), args.prefix)
    except (ValueError, OSError) as e:
        raise CommandError(f"cannot listen on {args.listen}: {e}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"witness {vkey}", flush=True)
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    print(f"following {', '.join(sorted(logs))}; listening on http://{bound_host}:{bound_port}"
          f"{args.prefix.rstrip('/')}/add-checkpoint", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
