"""Typed API errors (DRF APIException subclasses): each names the problem and the fix."""
from __future__ import annotations

from rest_framework import status
from rest_framework.exceptions import APIException


class BadKeyFile(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = ("the uploaded key file is not a Hallmark watermark key; upload the key "
                      "file `hallmark watermark` wrote (an owner key from `hallmark keygen` is "
                      "not a watermark key)")
    default_code = "bad_key_file"


class WeakKey(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "this key could never reach the registry's forgery floor; generate a longer key"
    default_code = "weak_key"


class KeyRefusedByScreening(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = ("independent reference models already match this key's triggers; make the "
                      "triggers from your own marked model")
    default_code = "screening_refused"


class BadSignature(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "the owner signature does not verify against the owner's public key"
    default_code = "bad_signature"


class BadSuspectURL(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "the suspect URL must be an http:// or https:// URL"
    default_code = "bad_suspect_url"


class DuplicateCommitment(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "you already committed this key; each key blob is committed once per owner"
    default_code = "duplicate_commitment"


class NotAdvParams(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "licences can only be issued for advparams commitments"
    default_code = "not_advparams"


class BadLicenceRequest(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "the licence cannot be issued for this model"
    default_code = "bad_licence_request"


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is larger than the registry accepts"
    default_code = "payload_too_large"


class LimiterUnavailable(APIException):
    """The shared cache that counts requests is unreachable: refuse (nothing was stored)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = ("the registry cannot count requests right now (its rate-limit store is "
                      "unreachable); nothing was stored: retry in a few seconds")
    default_code = "limiter_unavailable"

    def __init__(self) -> None:
        super().__init__()
        self.wait = 5  # seconds, sent as Retry-After


class NotAReportOwner(APIException):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = ("only an owner the report lists can countersign it; log in as that owner "
                      "(its keyid is in the report's predicate.owners)")
    default_code = "not_a_report_owner"


class BadCountersignature(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = ("the countersignature does not verify over this report's DSSE PAE with your "
                      "public key; sign the report file with `hallmark countersign`")
    default_code = "bad_countersignature"


class AlreadyCountersigned(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "you already countersigned this report; a report is countersigned once per owner"
    default_code = "already_countersigned"
