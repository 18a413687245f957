"""A black-box suspect served over the Open Inference Protocol v2 (KServe, Triton, MLServer REST).

An endpoint URL is recognised by its path: it contains `/v2/models/<name>`, optionally
followed by `/versions/<version>` and/or `/infer` (see `is_oip_url`). Anything else is a file
URL for the fetcher. The client first reads the model metadata
(`GET {base}/v2/models/{name}[/versions/{v}]`, required by the protocol) for the input's name,
datatype and shape, then answers predict calls with
`POST {base}/v2/models/{name}[/versions/{v}]/infer` and
`{"inputs": [{"name", "shape", "datatype", "data": [...]}]}`, reshaping the first output's
flat `data` to (N, C).

Every request goes through the same address guard as the fetcher (`workers.netguard`).
Queries are batched, rate-limited (requests per second), retried with exponential backoff on
429 and 5xx (honouring Retry-After), bounded per request and by a total deadline counted from
the client's creation, capped at `max_queries` inputs, and counted.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import torch

from verifier.suspect import Suspect
from workers.netguard import (
    Connector,
    Deadline,
    FetchError,
    FetchPolicy,
    Resolver,
    open_exchange,
    parse_target,
    show_url,
)

__all__ = ["EndpointError", "OipClient", "OipTarget", "is_oip_url", "oip_suspect",
           "parse_oip_url"]

_PATH = re.compile(r"^(?P<prefix>(?:/[^/]+)*?)/v2/models/(?P<name>[^/]+)"
                   r"(?:/versions/(?P<version>[^/]+))?(?:/infer)?/?$")
_DATATYPES = {"FP32", "FP64", "FP16"}  # input datatypes we can send as JSON numbers
_MAX_RESPONSE = 64 << 20  # bytes of one JSON response
_BACKOFF_BASE = 0.25  # seconds before the first retry; doubles each retry
_BACKOFF_MAX = 30.0  # longest wait between two attempts


class EndpointError(FetchError):
    """An inference endpoint that cannot be used: bad answers, too slow, over budget.

    Example:
        >>> EndpointError("the endpoint returned malformed JSON; fix the server", permanent=True).permanent
        True
    """


@dataclass(frozen=True)
class OipTarget:
    """An OIP v2 model URL, split."""

    base: str  # scheme://host[:port][/prefix], without a trailing slash
    name: str  # model name (URL-decoded path segment as given)
    version: str | None  # model version, if the URL names one
    model_url: str  # the metadata URL
    infer_url: str  # the inference URL


def is_oip_url(url: str) -> bool:
    """True when the URL path names an OIP v2 model: `/v2/models/<name>` (+ `/versions/<v>`,
    `/infer`), with nothing after it.

    Example:
        >>> is_oip_url("http://host:8080/v2/models/digits/infer"), is_oip_url("http://host/m.onnx")
        (True, False)
    """
    try:
        return _PATH.match(urlsplit(url).path or "") is not None
    except ValueError:
        return False


def parse_oip_url(url: str) -> OipTarget:
    """Split an OIP v2 model URL; raises EndpointError (permanent) for anything else."""
    parts = urlsplit(url)
    m = _PATH.match(parts.path or "")
    if m is None or parts.query or parts.fragment:
        raise EndpointError(f"{show_url(url)} is not an Open Inference Protocol v2 model URL; "
                            "expected http(s)://host/v2/models/<name>[/versions/<v>][/infer]",
                            permanent=True)
    name, version = m.group("name"), m.group("version")
    model_path = f"{m.group('prefix')}/v2/models/{name}" + (f"/versions/{version}" if version else "")
    base = urlunsplit((parts.scheme, parts.netloc, m.group("prefix"), "", ""))
    model_url = urlunsplit((parts.scheme, parts.netloc, model_path, "", ""))
    return OipTarget(base, name, version, model_url, model_url + "/infer")


class OipClient:
    """A batch predict function backed by an OIP v2 endpoint; use it with Suspect.from_predict.

    Counters: `queries` (inputs answered), `requests` (HTTP requests sent, retries included),
    `retries` (attempts repeated after 429/5xx/network errors).
    """

    def __init__(self, url: str, policy: FetchPolicy, *, batch_size: int = 64,
                 rate_per_second: float = 20.0, max_queries: int = 10_000, retries: int = 4,
                 deadline_seconds: float = 120, resolver: Resolver | None = None,
                 connector: Connector | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if batch_size < 1 or rate_per_second <= 0 or max_queries < 0 or retries < 0:
            raise ValueError("batch_size >= 1, rate_per_second > 0, max_queries >= 0 and "
                             "retries >= 0 are required")
        self.target = parse_oip_url(url)
        self.policy = policy
        self.batch_size = batch_size  # inputs per request
        self.interval = 1.0 / rate_per_second  # seconds between two requests
        self.max_queries = max_queries  # inputs this client may send in total
        self.retries = retries  # extra attempts per request
        self.deadline = Deadline(deadline_seconds)  # total, from creation
        self.resolver, self.connector, self._sleep = resolver, connector, sleep
        self.queries = 0  # inputs answered
        self.requests = 0  # HTTP requests sent
        self.retried = 0  # repeated attempts
        self._next_at = 0.0  # monotonic time of the next allowed request
        self._classes: int | None = None  # C, fixed by the first answer
        meta = self._request_json("GET", self.target.model_url, None)
        self.input_name, self.datatype, self.input_shape = _input_spec(meta, self.target)
        self.output_name = _output_name(meta)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) for inputs (N, ...), sent in batches of `batch_size`."""
        n = int(x.shape[0])
        if self.queries + n > self.max_queries:
            raise EndpointError(f"the query budget of {self.max_queries} inputs for "
                                f"{show_url(self.target.model_url)} is exhausted "
                                f"({self.queries} used, {n} more asked); raise max_queries",
                                permanent=True)
        x = x.detach().cpu().float()
        rows = [self._infer(x[i:i + self.batch_size]) for i in range(0, n, self.batch_size)]
        return torch.cat(rows) if rows else torch.empty(0, self._classes or 0)

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        n = int(batch.shape[0])
        shape = [n, *batch.shape[1:]]
        trailing = self.input_shape[1:]
        if trailing and all(d > 0 for d in trailing) and math.prod(trailing) == batch[0].numel():
            shape = [n, *trailing]
        body = {"inputs": [{"name": self.input_name, "shape": shape, "datatype": self.datatype,
                            "data": batch.reshape(-1).tolist()}]}
        answer = self._request_json("POST", self.target.infer_url, json.dumps(body).encode())
        out = _output_rows(answer, n, self.output_name, self.target)
        if self._classes is not None and out.shape[1] != self._classes:
            raise EndpointError(f"{show_url(self.target.infer_url)} returned {out.shape[1]} "
                                f"outputs per input after {self._classes} earlier; the model "
                                "must answer with a fixed number of classes", permanent=True)
        self._classes = int(out.shape[1])
        self.queries += n
        return out

    def _request_json(self, method: str, url: str, body: bytes | None) -> Any:
        """One request with rate limiting, retries with backoff, and the deadlines."""
        target = parse_target(url)
        headers = {"User-Agent": self.policy.user_agent, "Accept": "application/json",
                   "Accept-Encoding": "identity", "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            self._wait_for_slot()
            self.requests += 1
            last = attempt == self.retries
            per_request = self.deadline.capped(self.policy.timeout_seconds)
            try:
                with open_exchange(method, target, self.policy, per_request, headers=headers,
                                   body=body, resolver=self.resolver,
                                   connector=self.connector) as ex:
                    status, retry_after = ex.status, ex.headers.get("Retry-After")
                    chunks: list[bytes] = []
                    ex.read_body(min(self.policy.max_bytes, _MAX_RESPONSE), chunks.append)
            except FetchError as e:
                if e.permanent or last or self.deadline.expired():
                    raise self._wrap(e, url) from None
                self._backoff(attempt, None, url)
                continue
            if status == 200:
                return _parse_json(b"".join(chunks), url)
            if status == 429 or status >= 500:
                if last:
                    raise EndpointError(f"{show_url(url)} still answered HTTP {status} after "
                                        f"{self.retries} retries; try again later or lower the "
                                        "query rate", permanent=False)
                self._backoff(attempt, retry_after, url)
                continue
            if 300 <= status < 400:
                raise EndpointError(f"{show_url(url)} answered with a redirect (HTTP {status}); "
                                    "inference requests are not redirected: give the final "
                                    "endpoint URL", permanent=True)
            raise EndpointError(f"{show_url(url)} answered HTTP {status} "
                                f"({_snippet(b''.join(chunks))}); check the model name and "
                                "that the server speaks the Open Inference Protocol v2",
                                permanent=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_for_slot(self) -> None:
        """Rate limit: at most one request every `interval` seconds."""
        wait = self._next_at - time.monotonic()
        if wait > 0:
            self._sleep_within_deadline(wait, "rate limit")
        self._next_at = time.monotonic() + self.interval

    def _backoff(self, attempt: int, retry_after: str | None, url: str) -> None:
        self.retried += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** attempt)
        asked = _retry_after_seconds(retry_after)
        if asked is not None:
            delay = max(delay, asked)
        self._sleep_within_deadline(delay, f"retry of {show_url(url)}")

    def _sleep_within_deadline(self, seconds: float, why: str) -> None:
        if seconds > self.deadline.remaining():
            raise EndpointError(f"waiting {seconds:.3g} s ({why}) would pass the "
                                f"{self.deadline.seconds:g} s deadline for "
                                f"{show_url(self.target.model_url)}; the endpoint is too slow "
                                "or overloaded: try again later", permanent=False)
        self._sleep(seconds)

    def _wrap(self, e: FetchError, url: str) -> FetchError:
        """Address refusals stay FetchErrors; network failures become EndpointErrors."""
        if e.permanent:
            return e
        return EndpointError(f"{show_url(url)} failed: {e.message}", permanent=False)


def oip_suspect(url: str, policy: FetchPolicy, *, batch_size: int = 64,
                rate_per_second: float = 20.0, max_queries: int = 10_000, retries: int = 4,
                deadline_seconds: float = 120, resolver: Resolver | None = None,
                connector: Connector | None = None) -> Suspect:
    """A black-box Suspect whose predict queries an OIP v2 endpoint.

    Args:
        url: http(s)://host[:port][/prefix]/v2/models/<name>[/versions/<v>][/infer].
        policy: the fetch policy (address rules, connect timeout, per-request time limit
            `timeout_seconds`, response size cap `max_bytes`).
        batch_size: inputs per inference request.
        rate_per_second: inference requests per second, at most.
        max_queries: inputs this suspect may send in total.
        retries: extra attempts per request after 429, 5xx or a network failure.
        deadline_seconds: total time budget from now, metadata request included.
        resolver, connector: injectable DNS and connect, as in `workers.fetcher.fetch`.

    Returns:
        Suspect.from_predict(client); `suspect.queries` counts the inputs sent.

    Raises:
        FetchError: the endpoint's address is refused by the policy.
        EndpointError: the metadata is missing or malformed, or the endpoint is unreachable.

    Example:
        >>> s = oip_suspect("http://127.0.0.1:8000/v2/models/digits", FetchPolicy(allow_loopback=True))  # doctest: +SKIP
        >>> s.predict(torch.zeros(3, 64)).shape  # doctest: +SKIP
        torch.Size([3, 10])
    """
    client = OipClient(url, policy, batch_size=batch_size, rate_per_second=rate_per_second,
                       max_queries=max_queries, retries=retries,
                       deadline_seconds=deadline_seconds, resolver=resolver, connector=connector)
    suspect = Suspect.from_predict(client)
    suspect.description = f"OIP v2 endpoint {show_url(client.target.model_url)}"
    return suspect


def _parse_json(raw: bytes, url: str) -> Any:
    def no_constants(token: str) -> Any:
        raise EndpointError(f"{show_url(url)} returned the non-JSON number {token}; the model "
                            "must return finite numbers", permanent=True)

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise EndpointError(f"{show_url(url)} returned malformed JSON ({_snippet(raw)}); the "
                            "endpoint must speak the Open Inference Protocol v2",
                            permanent=True) from None


def _input_spec(meta: Any, target: OipTarget) -> tuple[str, str, list[int]]:
    """(input name, datatype, shape with -1 for dynamic dims) from the model metadata."""
    where = f"the metadata of {show_url(target.model_url)}"
    inputs = meta.get("inputs") if isinstance(meta, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        count = len(inputs) if isinstance(inputs, list) else "no"
        raise EndpointError(f"{where} lists {count} inputs; Hallmark sends one tensor, so the "
                            "model must have exactly one input", permanent=True)
    spec = inputs[0]
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not name or len(name) > 256:
        raise EndpointError(f"{where} gives no valid input name; fix the model metadata",
                            permanent=True)
    if datatype not in _DATATYPES:
        raise EndpointError(f"{where} says the input is {str(datatype)[:20]!r}; Hallmark sends "
                            f"float inputs ({', '.join(sorted(_DATATYPES))})", permanent=True)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= -1 for d in shape):
        raise EndpointError(f"{where} gives input shape {str(shape)[:60]}; expected a list of "
                            "integers (-1 for dynamic)", permanent=True)
    return name, datatype, shape


def _output_name(meta: Any) -> str | None:
    outputs = meta.get("outputs") if isinstance(meta, dict) else None
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        name = outputs[0].get("name")
        return name if isinstance(name, str) else None
    return None


def _output_rows(answer: Any, n: int, output_name: str | None, target: OipTarget) -> torch.Tensor:
    """The (N, C) float32 logits in an inference response; anything malformed is refused."""
    where = f"the answer of {show_url(target.infer_url)}"
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise EndpointError(f"{where} has no \"outputs\" list; the endpoint must speak the Open "
                            "Inference Protocol v2", permanent=True)
    out = next((o for o in outputs if o.get("name") == output_name), outputs[0])
    data, shape = out.get("data"), out.get("shape")
    if not isinstance(data, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in data):
        raise EndpointError(f"{where} holds non-numeric or nested output data; expected a flat "
                            "list of numbers", permanent=True)
    if (not isinstance(shape, list) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or math.prod(shape) != len(data)):
        raise EndpointError(f"{where} has output shape {str(shape)[:60]} for {len(data)} values; "
                            "the shape must match the data", permanent=True)
    if shape[0] != n or n == 0 or len(data) % n:
        raise EndpointError(f"{where} has {shape[0]} rows for {n} inputs; the endpoint must "
                            "answer one row per input", permanent=True)
    values = torch.tensor(data, dtype=torch.float64)
    if not torch.isfinite(values).all():
        raise EndpointError(f"{where} holds non-finite numbers; the model must return finite "
                            "logits", permanent=True)
    return values.float().reshape(n, -1)  # (N, C)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: an integer, or an HTTP date; None if absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(raw: bytes) -> str:
    text = raw[:120].decode("utf-8", "replace")
    return repr(text) + ("…" if len(raw) > 120 else "")

