"""Quality control: practice trial, validation tolerance, swapped repeat, flags, the viewport
gate, the consent text and the trial page's variables."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, select
from survey_helpers import csrf_of, item_ids, make_fake_run, rendered, start, study_app

from survey_app.export import STREAK_FLAG, TOO_FAST_MS, export_votes, person_flags
from survey_app.models import Participant, Screening
from survey_app.study import create_study


def _study(root, name="study", **kw):
    """The study ``root/name`` (made on first use; later calls with that name reuse it)."""
    if (root / name / "study.json").exists():
        return root / name
    run = root / "run"
    if not run.exists():
        make_fake_run(run)
    args = {"resolution": 128, "trials_per_participant": 6, "validation": 2, "progress": False}
    return create_study(run, root / name, **(args | kw)).folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("qc")


def _page(app, client) -> dict:
    with rendered(app) as seen:
        r = client.get("/trial")
    assert r.status_code == 200
    return seen[-1][1]


def _answer(client, index: int, choice: str, **extra) -> str:
    r = client.post("/trial", data={"csrf_token": csrf_of(client), "trial": index,
                                    "choice": choice, **extra})
    assert r.status_code == 303
    return r.headers["Location"]


def _kinds(client, html_or_ctx) -> set[str]:
    items = client.application.extensions["survey"].items
    return {items[int(i)]["kind"] for i in item_ids(client, html_or_ctx)}


def test_practice_trial_first_with_feedback_and_not_a_vote(root, tmp_path):
    app = study_app(_study(root), tmp_path / "v.db")
    client = app.test_client()
    assert start(client).status_code == 303
    r = client.get("/trial")
    ctx = _page(app, client)
    assert ctx["practice"] is True and ctx["index"] == 0 and ctx["number"] is None
    assert _kinds(client, r.text) == {"reference", "broken"}  # a pair with a known answer
    left, _ = item_ids(client, r.text)
    wrong = "right" if app.extensions["survey"].items[int(left)]["kind"] == "reference" else "left"
    assert _answer(client, 0, wrong).endswith("/practice")
    with rendered(app) as seen:
        assert client.get("/practice").status_code == 200
    fb = seen[0][1]
    assert fb["correct"] is False and fb["choice"] == wrong and fb["expected"] != wrong
    ctx = _page(app, client)
    assert ctx["practice"] is False and (ctx["index"], ctx["number"], ctx["n_trials"]) == (1, 1, 6)
    db = app.extensions["survey"].db
    assert len(export_votes(db)) == 0  # the practice answer is no vote ...
    practice = export_votes(db, include_practice=True)
    assert practice["kind"].tolist() == ["practice"]  # ... but it is kept, flagged
    with db.session_scope() as s:  # a wrong practice answer excludes nobody
        assert not s.scalar(select(Participant.excluded))


def test_validation_tolerance(root, tmp_path):
    def run(tolerance: int, wrong: int) -> bool:
        study = _study(root, f"tol{tolerance}", validation_tolerance=tolerance)
        app = study_app(study, tmp_path / f"t{tolerance}_{wrong}.db")
        client = app.test_client()
        assert start(client).status_code == 303
        items = app.extensions["survey"].items
        failed = 0
        while (r := client.get("/trial")).status_code == 200:
            ctx = _page(app, client)
            left, right = item_ids(client, r.text)
            choice = "left"
            if {items[int(left)]["kind"], items[int(right)]["kind"]} == {"reference", "broken"}:
                good = "left" if items[int(left)]["kind"] == "reference" else "right"
                bad = "right" if good == "left" else "left"
                fail = not ctx["practice"] and failed < wrong
                failed += fail
                choice = bad if fail else good
            _answer(client, ctx["index"], choice)
        df = export_votes(app.extensions["survey"].db)
        assert len(df) == 6 and failed == wrong
        return bool(df["excluded"].all())

    assert run(0, 0) is False
    assert run(0, 1) is True  # the default: one failure of two excludes
    assert run(1, 1) is False
    assert run(1, 2) is True


def test_swapped_repeat_is_on_by_default(root, tmp_path):
    _study(root)  # makes the run
    spec = create_study(root / "run", root / "default", resolution=128, progress=False)
    assert spec.repeat_swapped and spec.practice and spec.validation_tolerance == 0
    app = study_app(spec.folder, tmp_path / "v.db")
    client = app.test_client()
    assert start(client).status_code == 303
    while client.get("/trial").status_code == 200:
        _answer(client, _page(app, client)["index"], "left")
    df = export_votes(app.extensions["survey"].db)
    assert df["repeat_of"].notna().sum() == 1  # kind "repeat", or "validation" if a check


def test_flags_are_columns_and_exclude_nobody():
    n = STREAK_FLAG + 2
    votes = pd.DataFrame({
        "participant": [1] * n + [2] * n,
        "trial": list(range(n)) * 2,
        "choice": ["left"] * n + ["left", "right"] * (n // 2),
        "too_fast": [True] * n + [False] * n,
        "hidden_ms": pd.array([70_000] + [None] * (n - 1) + [10] * n, dtype="Int64"),
    })
    flags = person_flags(votes)
    assert flags.loc[1, "flags"] == "too_fast;same_side;hidden_tab"
    assert flags.loc[1, "p_longest_same_side"] == n and flags.loc[1, "p_too_fast_share"] == 1.0
    assert flags.loc[2, "flags"] == "" and flags.loc[2, "p_hidden_ms"] == 10 * n
    assert flags.loc[2, "p_longest_same_side"] == 1


def test_flags_in_export_and_admin(root, tmp_path):
    app = study_app(_study(root), tmp_path / "v.db")
    client = app.test_client()
    assert start(client).status_code == 303
    while client.get("/trial").status_code == 200:
        _answer(client, _page(app, client)["index"], "left", rt_ms=str(TOO_FAST_MS // 2),
                hidden_ms="20000")
    df = export_votes(app.extensions["survey"].db)
    assert df["too_fast"].all() and (df["p_hidden_ms"] == 20000 * 6).all()
    assert set(df["flags"]) == {"too_fast;hidden_tab"}
    assert not df["excluded"].any() or df["exclusion_reason"].str.startswith("failed").all()
    with rendered(app) as seen:
        client.get("/admin/", headers={"Authorization": "Bearer admin-token-for-tests-0123456789"})
    assert seen[0][1]["participants"][0]["flags"] == "too_fast;hidden_tab"


def test_viewport_gate_records_and_is_polite(root, tmp_path):
    app = study_app(_study(root), tmp_path / "v.db")
    phone = app.test_client()
    with rendered(app) as seen:
        r = start(phone, vw="390", vh="844", dpr="3", pid="phone_user")
    assert r.status_code == 200 and seen[-1][0] == "small_screen.html"
    assert (seen[-1][1]["min_width"], seen[-1][1]["min_height"]) == (720, 400)
    db = app.extensions["survey"].db
    with db.session_scope() as s:
        row = s.scalars(select(Screening)).one()
        assert (row.external_id, row.viewport_w, row.viewport_h, row.dpr) == (
            "phone_user", 390, 844, 3.0)
        assert s.scalar(select(func.count()).select_from(Participant)) == 0
    # The same person on a larger screen may still take part; without JS nobody is refused.
    assert start(app.test_client(), vw="1366", vh="660", pid="phone_user").status_code == 303
    assert start(app.test_client()).status_code == 303
    assert start(app.test_client(), vw="abc").status_code == 400

    allowed = study_app(_study(root, "phones", allow_phone=True), tmp_path / "p.db")
    client = allowed.test_client()
    assert start(client, vw="390", vh="844").status_code == 303
    assert _page(allowed, client)["allow_phone"] is True


def test_consent_page_announces_the_real_schedule(root, tmp_path):
    run = make_fake_run(root / "small_run", methods=("good", "flat"), images=("alpha", "beta"))
    study = create_study(run, root / "small", resolution=128, trials_per_participant=25,
                         validation=2, progress=False).folder
    app = study_app(study, tmp_path / "v.db")
    client = app.test_client()
    with rendered(app) as seen:
        client.get("/")
    announced = seen[0][1]["n_trials"]
    assert announced < 25
    assert start(client).status_code == 303
    assert _page(app, client)["n_trials"] == announced


def test_trial_page_variables(root, tmp_path):
    app = study_app(_study(root), tmp_path / "v.db")
    client = app.test_client()
    assert start(client).status_code == 303
    ctx = _page(app, client)
    for side in ("left", "right"):
        assert set(ctx[side]) == {"url", "width", "height"}
        assert ctx[side]["url"].startswith("/i/")
    assert set(ctx["hole"]) == {"x", "y", "w", "h"} and set(ctx["crop"]) == {"cx", "cy"}
    assert ctx["crop"]["cx"] == ctx["hole"]["x"] + ctx["hole"]["w"] // 2
    assert len(ctx["preload"]) == 2 and all(u.startswith("/i/") for u in ctx["preload"])
    _answer(client, 0, "left")
    client.get("/practice")
    assert _page(app, client)["left"]["url"] in ctx["preload"]  # what was preloaded is shown
    while client.get("/trial").status_code == 200:
        ctx = _page(app, client)
        _answer(client, ctx["index"], "left")
    assert ctx["preload"] == []  # the last trial has nothing to preload


def test_cli_quality_options(root, tmp_path):
    from bench.cli import main as cli_main
    from survey_app.study import load_study

    _study(root)  # makes the run
    out = tmp_path / "cli_study"
    assert cli_main(["survey", "create", "--run", str(root / "run"), "--resolution", "128",
                     "--no-practice", "--no-repeat-swapped", "--validation-tolerance", "1",
                     "--allow-phone", "--min-viewport", "800x500", "--out", str(out)]) == 0
    spec = load_study(out)
    assert (spec.practice, spec.repeat_swapped, spec.validation_tolerance, spec.allow_phone,
            spec.min_viewport) == (False, False, 1, True, (800, 500))
    base = ["survey", "create", "--run", str(root / "run"), "--resolution", "128", "--out",
            str(tmp_path / "bad")]
    assert cli_main([*base, "--validation-tolerance", "5"]) == 2  # more than --validation
    with pytest.raises(SystemExit) as exc:  # argparse: usage line and exit 2
        cli_main([*base, "--min-viewport", "wide"])
    assert exc.value.code == 2
