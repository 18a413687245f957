"""A small client of the registry's HTTP API (standard library only).

Example:
    c = Client("http://127.0.0.1:8000")
    c.signup("alice", "a long password")
    model = c.register_model("digits-mlp", version="1")
    c.add_commitment(model["id"], key.to_bytes())
    v = c.submit("https://example.org/suspect.onnx")
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any


class APIError(RuntimeError):
    """The registry answered with an error status; `status` and `body` hold its answer."""

    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.retry_after = retry_after  # seconds, from a 429 or 503 answer's Retry-After header


class Client:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str | None = None) -> Any:
        req = urllib.request.Request(self.base_url + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                is_json = resp.headers.get_content_type() == "application/json"
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                detail: Any = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")[:500]
            retry = e.headers.get("Retry-After") if e.headers else None
            raise APIError(e.code, detail,
                           float(retry) if retry and retry.strip().isdigit() else None) from None
        return json.loads(raw) if is_json else raw.decode()

    def _json(self, method: str, path: str, payload: dict[str, Any]) -> Any:
        return self._request(method, path, json.dumps(payload).encode(), "application/json")

    def signup(self, username: str, password: str, public_key_b64: str | None = None) -> dict[str, Any]:
        """Create an owner and keep its API token for later calls."""
        payload = {"username": username, "password": password}
        if public_key_b64:
            payload["public_key"] = public_key_b64
        answer = self._json("POST", "/api/signup", payload)
        self.token = answer["token"]
        return answer

    def login(self, username: str, password: str) -> str:
        """Exchange a username and password for the owner's API token, and keep it."""
        answer = self._json("POST", "/api/token", {"username": username, "password": password})
        self.token = str(answer["token"])
        return self.token

    def register_model(self, name: str, **fields: str) -> dict[str, Any]:
        return self._json("POST", "/api/models/", {"name": name, **fields})

    def add_commitment(self, model_id: str, key_blob: bytes,
                       owner_signature_b64: str | None = None) -> dict[str, Any]:
        """Upload a key blob (multipart); answers with the commitment and its signed receipt."""
        boundary = uuid.uuid4().hex
        parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"; "
                 f"filename=\"key.safetensors\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                 .encode() + key_blob + b"\r\n"]
        if owner_signature_b64:
            parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"owner_signature\""
                         f"\r\n\r\n{owner_signature_b64}\r\n".encode())
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self._request("POST", f"/api/models/{model_id}/commitments/", body,
                             f"multipart/form-data; boundary={boundary}")

    def submit(self, url: str, target: str | None = None,
               publisher_keys: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, "target": target}
        if publisher_keys:
            body["publisher_keys"] = publisher_keys
        return self._json("POST", "/api/verifications/", body)

    def verification(self, verification_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/verifications/{verification_id}/")

    def wait(self, verification_id: str, timeout: float = 600.0, poll: float = 0.5,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the verification is done or failed; report each change of progress."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            v = self.verification(verification_id)
            state = (v["status"], v["progress"])
            if on_progress is not None and state != last:
                on_progress(v)
            last = state
            if v["status"] in ("done", "failed"):
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"verification {verification_id} still {v['status']} "
                                   f"({v['progress']}) after {timeout:.0f} s")
            time.sleep(poll)

    def report(self, report_id: str) -> dict[str, Any]:
        """The public signed report (no login needed)."""
        return self._request("GET", f"/api/reports/{report_id}")

    def countersign(self, report_id: str, sig_b64: str) -> dict[str, Any]:
        """Add this owner's countersignature (from `hallmark countersign`) to a report."""
        return self._json("POST", f"/api/reports/{report_id}/signatures", {"sig": sig_b64})

    def checkpoint(self) -> str:
        return self._request("GET", "/api/log/checkpoint")
