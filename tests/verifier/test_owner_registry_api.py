"""How the owners' commands word the registry's answers (verifier.owners.registry_api)."""
from __future__ import annotations

import pytest

from verifier.client import APIError
from verifier.owners.registry_api import call, problem


def test_problem_details_are_shown_with_their_title_detail_and_field_errors():
    e = APIError(400, {"type": "about:blank", "title": "Bad key file", "status": 400,
                       "detail": "the uploaded key file is not a Hallmark watermark key",
                       "code": "bad_key_file", "errors": {"key": ["truncated"]}})
    assert problem(e) == ("the registry answered HTTP 400: Bad key file; the uploaded key file "
                          "is not a Hallmark watermark key; key: ['truncated']")


def test_an_unauthorized_answer_says_how_to_log_in():
    assert "run `hallmark login`" in problem(APIError(401, {"detail": "Invalid token."}))


def test_a_short_retry_after_is_waited_out_once():
    calls, slept = [], []

    def submit() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise APIError(429, {"detail": "throttled"}, retry_after=3)
        return "queued"

    assert call(submit, sleep=slept.append) == "queued"
    assert (len(calls), slept) == (2, [3])


def test_a_long_retry_after_is_reported_not_waited():
    def submit() -> str:
        raise APIError(429, {"detail": "Request was throttled."}, retry_after=3600)

    with pytest.raises(APIError) as e:
        call(submit, sleep=lambda s: pytest.fail("must not sleep for an hour"))
    assert "throttled: try again later" in problem(e.value)
