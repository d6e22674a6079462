"""Crowd-platform ids, outcomes and completion codes.

A participant arrives with the ids their platform appends to the study URL, stored as given:

==========  ====================  ==========  ============  =============================
platform    person (external_id)  study       session       extra
==========  ====================  ==========  ============  =============================
prolific    ``PROLIFIC_PID``      STUDY_ID    SESSION_ID
mturk       ``workerId``          hitId       assignmentId  ``turkSubmitTo`` (form target)
generic     ``pid``
==========  ====================  ==========  ============  =============================

Outcomes: ``completed`` (every trial answered, validation passed), ``failed_screening``
(more validation failures than the study tolerates) and ``returned`` (withdrew). Each gets a
code: a fixed one per study when configured (Prolific gives one code per outcome), else a
random one per person. MTurk's preview (``assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE``) shows
the instructions only.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from .models import OUTCOMES

ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
PLATFORMS: dict[str, tuple[str, str | None, str | None]] = {
    "prolific": ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID"),
    "mturk": ("workerId", "hitId", "assignmentId"),
    "generic": ("pid", None, None),
}
MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
# Where an MTurk ExternalQuestion posts its answer: only MTurk's own hosts, never a URL a
# link could choose.
MTURK_SUBMIT_HOSTS = ("https://www.mturk.com", "https://workersandbox.mturk.com")
CODE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
RETURN_URL_RE = re.compile(r"^https?://[^\s<>\"']+$")  # a completion/return URL template


@dataclass(frozen=True)
class PlatformIds:
    """The ids a participant arrived with (all None without a platform)."""

    platform: str | None = None
    external_id: str | None = None
    study: str | None = None
    session: str | None = None
    submit_to: str | None = None

    @property
    def preview(self) -> bool:
        """MTurk shows the page before the worker accepts the HIT: no start then."""
        return self.platform == "mturk" and self.session == MTURK_PREVIEW

    def fields(self) -> list[tuple[str, str]]:
        """(name, value) pairs that carry these ids from the consent page to ``/start``."""
        if self.platform is None:
            return []
        names = PLATFORMS[self.platform]
        out = [(n, v) for n, v in zip(names, (self.external_id, self.study, self.session),
                                       strict=True) if n and v]
        if self.submit_to:
            out.append(("turkSubmitTo", self.submit_to))
        return out


def read_ids(values: Mapping[str, str]) -> PlatformIds:
    """The platform ids in ``values`` (query string or form); ``ValueError`` names a bad one.

    The first platform whose person id is present wins; its other ids are optional.
    """
    if values.get("assignmentId") == MTURK_PREVIEW:
        # MTurk's preview names no worker (the HIT is not accepted yet): instructions only.
        return PlatformIds("mturk", session=MTURK_PREVIEW)
    for platform, names in PLATFORMS.items():
        if names[0] not in values:
            continue
        got: list[str | None] = []
        for name in names:
            raw = values.get(name) if name else None
            if raw is not None and not ID_RE.fullmatch(raw):
                raise ValueError(f"{name}: use 1-64 letters, digits, '.', '_' or '-'")
            got.append(raw or None)
        submit_to = None
        if platform == "mturk" and values.get("turkSubmitTo"):
            submit_to = values["turkSubmitTo"].rstrip("/")
            if submit_to not in MTURK_SUBMIT_HOSTS:
                raise ValueError(f"turkSubmitTo: must be one of {', '.join(MTURK_SUBMIT_HOSTS)}")
        return PlatformIds(platform, got[0], got[1], got[2], submit_to)
    return PlatformIds()


def check_codes(codes: Mapping[str, str | None]) -> dict[str, str | None]:
    """Fixed per-study codes by outcome (missing = random per person); ``ValueError``."""
    unknown = set(codes) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"unknown outcome(s) {sorted(unknown)}; use {', '.join(OUTCOMES)}")
    out: dict[str, str | None] = {o: codes.get(o) or None for o in OUTCOMES}
    for outcome, code in out.items():
        if code is not None and not CODE_RE.fullmatch(code):
            raise ValueError(f"--code-{outcome.replace('_', '-')}: {code!r}; use 1-32 "
                             "letters, digits, '_' or '-'")
    return out


def outcome_code(codes: Mapping[str, str | None], outcome: str) -> str:
    """The study's fixed code for ``outcome``, or a new random per-person code."""
    return codes.get(outcome) or secrets.token_hex(5).upper()


def completion_link(template: str | None, code: str) -> str | None:
    """The platform's return URL with ``{code}`` filled in (None without a template)."""
    return template.replace("{code}", code) if template else None


def mturk_form(ids: PlatformIds) -> dict | None:
    """Where and what the done page posts for an MTurk ExternalQuestion, else None."""
    if ids.platform != "mturk" or not ids.submit_to or not ids.session or ids.preview:
        return None
    return {"action": f"{ids.submit_to}/mturk/externalSubmit", "assignmentId": ids.session}
