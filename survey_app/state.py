"""Per-app state of the voting site: what every request needs, built once by ``create_app``.

Kept apart from :mod:`survey_app.app` so that the blueprints can reach it without
importing the factory (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from .db import Database
from .security import RateLimiter
from .study import StudySpec


@dataclass
class SurveyState:
    """What every request needs, built once per app."""

    spec: StudySpec
    db: Database
    study_id: int
    # item id -> {"path", "width", "height", "method", "image", "kind", "hole"}
    items: dict[int, dict]
    admin_token: str | None
    vote_limiter: RateLimiter
    start_limiter: RateLimiter
    login_limiter: RateLimiter
    compare_pairs: list = field(default_factory=list)  # assign.PairRef, fixed per study
    validation_pairs: list = field(default_factory=list)
    answer_sql: Any = None  # queries.AnswerStatements, prepared by create_app
    start_sql: Any = None  # queries.StartStatements on PostgreSQL, else None
    pair_counts: Any = None  # queries.PairCounts, made by create_app
    token_key: bytes = b""  # images.token_key(SECRET_KEY)
    images: dict = field(default_factory=dict)  # item id -> images.PaddedPng
    codes: dict = field(default_factory=dict)  # outcome -> fixed code or None (platforms)
    n_scored: int = 0  # scored trials a schedule has (what the consent page announces)
    has_practice: bool = False


def state() -> SurveyState:
    """The current app's :class:`SurveyState` (inside a request or app context)."""
    return current_app.extensions["survey"]
