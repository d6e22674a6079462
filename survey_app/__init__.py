"""The pairwise-voting site (Flask); the analysis of its votes is in ``bench.ranking``.

``create_app(config)`` (in :mod:`survey_app.app`) is the application factory, so
``flask --app survey_app run`` works. It is imported on first use so that the ``hrbench``
command line, which registers the survey commands, starts without loading Flask and
SQLAlchemy.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("create_app", "SurveyState"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'survey_app' has no attribute {name!r}")


__all__ = ["create_app"]
