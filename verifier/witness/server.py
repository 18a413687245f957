"""The witness's HTTP service: POST <prefix>/add-checkpoint (c2sp.org/tlog-witness).

A threaded stdlib server (no framework), one `protocol.Witness` behind it. Bodies above
MAX_BODY bytes are refused (413) before reading; any other path is 404.
"""
from __future__ import annotations

import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from verifier.witness.protocol import Answer, Witness

MAX_BODY = 64 * 1024  # 63 proof lines and a checkpoint with 100 signatures fit easily
log = logging.getLogger("hallmark.witness")


def make_server(witness: Witness, host: str = "127.0.0.1", port: int = 0,
                prefix: str = "") -> ThreadingHTTPServer:
    """A server (not yet serving) for `witness` on host:port; `port=0` picks a free port.

    Example:
        server = make_server(witness)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
    """
    path = prefix.rstrip("/") + "/add-checkpoint"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the protocol recommends
        server_version = "hallmark-witness"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            started = time.monotonic()
            if self.path != path:
                return self._send(Answer(404, b"not found: POST " + path.encode() + b"\n"),
                                  started, drain=True)
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._send(Answer(411, b"a Content-Length header is required\n"), started,
                                  close=True)
            if not 0 <= length <= MAX_BODY:
                return self._send(Answer(413, f"body over {MAX_BODY} bytes\n".encode()), started,
                                  close=True)
            self._send(witness.add_checkpoint(self.rfile.read(length)), started)

        def do_GET(self) -> None:  # noqa: N802
            self._send(Answer(404, b"this witness only answers POST add-checkpoint\n"),
                       time.monotonic())

        def _send(self, answer: Answer, started: float, drain: bool = False,
                  close: bool = False) -> None:
            if drain:
                try:
                    self.rfile.read(min(int(self.headers.get("Content-Length", "0")), MAX_BODY))
                except ValueError:
                    close = True
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(answer.body)
            log.info("add-checkpoint %s in %.3fs", answer.status, time.monotonic() - started)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per request is logged by _send

    return ThreadingHTTPServer((host, port), Handler)
