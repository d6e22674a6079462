"""Blinding: nothing a participant receives tells which trial is a validation question.

The main test simulates 200 participants and records, per scored trial, every byte they
receive apart from the pixels: the trial page (HTML with tokens and per-request values
normalised away), the response headers of the page and of both images, the image URLs'
form and the image byte counts (in left/right order). A bot that is told the true
validation trials of the first 100 participants learns which of these observations mean
"validation", then guesses the validation trials of the other 100. It must do no better
than chance (a 99 % binomial interval around its hit rate covers the chance rate). The
same bot, given the file sizes the server would send without padding, finds them — the
control that shows the test can fail.
"""

from __future__ import annotations

import hashlib
import random
import re
import zlib
from collections import Counter, defaultdict

import cv2
import numpy as np
import pytest
from scipy.stats import binomtest
from survey_helpers import csrf_of, make_fake_run, start, study_app

from survey_app.images import BadToken, equal_size_plan, make_token, read_token, token_key
from survey_app.models import Trial
from survey_app.study import create_study

N_PEOPLE = 200
N_TRIALS = 6
N_VALIDATION = 2
VOLATILE_HEADERS = {"set-cookie", "date", "vary"}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("blinding")
    # More photos than trials per person, as in a real study (in a study with fewer photos
    # than trials a photo must recur, and only one check per photo exists: see the report).
    run = make_fake_run(root / "run", images=tuple(f"photo{i}" for i in range(8)))
    create_study(run, root / "study", resolution=128, trials_per_participant=N_TRIALS,
                 validation=N_VALIDATION, progress=False)
    return root / "study"


def test_tokens_are_per_participant_unforgeable_and_carry_no_id():
    key = token_key("s" * 40)
    tok = make_token(key, 7, 3, "left", 42)
    assert read_token(key, 7, tok) == (3, "left", 42)
    assert "42" not in tok and len(tok) == 34
    seen = {make_token(key, pid, i, side, 42) for pid in range(50) for i in range(10)
            for side in ("left", "right")}
    assert len(seen) == 1000  # one item, never the same URL twice
    with pytest.raises(BadToken):
        read_token(key, 8, tok)  # another participant's token
    with pytest.raises(BadToken):
        read_token(token_key("t" * 40), 7, tok)  # another server's key
    for i in range(len(tok)):  # any changed character is refused
        bad = tok[:i] + ("A" if tok[i] != "A" else "B") + tok[i + 1:]
        with pytest.raises(BadToken):
            read_token(key, 7, bad)
    for junk in ("", "x", "%" * 34, "A" * 33, "A" * 35):
        with pytest.raises(BadToken):
            read_token(key, 7, junk)


def test_padding_keeps_pixels_and_equalises_lengths(study_dir):
    files = sorted((study_dir / "images").glob("*.png"))
    plan = equal_size_plan({"all": files})
    lengths = set()
    for path in files:
        body = b"".join(plan[path].chunks())
        lengths.add(len(body))
        assert len(body) == plan[path].length
        decoded = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
        original = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(decoded, original)
        # Every chunk's CRC is right (a strict decoder would refuse the file otherwise).
        pos = 8
        while pos < len(body):
            n = int.from_bytes(body[pos:pos + 4], "big")
            kind, data = body[pos + 4:pos + 8], body[pos + 8:pos + 8 + n]
            crc = int.from_bytes(body[pos + 8 + n:pos + 12 + n], "big")
            assert zlib.crc32(kind + data) & 0xFFFFFFFF == crc, kind
            pos += 12 + n
    assert len(lengths) == 1


def _normalise(html: str) -> str:
    html = re.sub(r"/i/[A-Za-z0-9_\-]+", "/i/TOKEN", html)
    html = re.sub(r'name="csrf_token" value="[^"]+"', "CSRF", html)
    html = re.sub(r'name="trial" value="[0-9]+"', "TRIAL", html)
    return re.sub(r'id="progress">[^<]*<', "PROGRESS", html)


def _headers(resp) -> tuple:
    return tuple(sorted((k.lower(), v) for k, v in resp.headers.items()
                        if k.lower() not in VOLATILE_HEADERS))


def _observe(client) -> list[tuple[int, str, tuple, tuple[int, int], int]]:
    """(trial index, observation key, url form, (left bytes, right bytes), item ids hash) per
    scored trial, answering at random."""
    out = []
    rng = random.Random(1)
    while (page := client.get("/trial")).status_code == 200:
        index = int(re.search(r'name="trial" value="([0-9]+)"', page.text).group(1))
        urls = re.findall(r'<image href="(/i/[^"]+)"', page.text)
        images = [client.get(u) for u in urls]
        assert all(r.status_code == 200 for r in images)
        assert all("etag" not in {k.lower() for k in r.headers.keys()} for r in images)
        assert all("last-modified" not in {k.lower() for k in r.headers.keys()} for r in images)
        sizes = tuple(len(r.data) for r in images)
        key = hashlib.sha256(repr((_normalise(page.text), _headers(page),
                                   [_headers(r) for r in images],
                                   [len(u) for u in urls], sizes)).encode()).hexdigest()
        if "Practice" not in page.text:
            out.append((index, key, sizes))
        post = client.post("/trial", data={"csrf_token": csrf_of(client), "trial": index,
                                           "choice": rng.choice(("left", "right"))})
        assert post.status_code == 303
    return out


def _bot(train: list[dict], test: list[dict], feature: str) -> tuple[int, int]:
    """Learn P(validation | feature value) on ``train``; guess top-k per person in ``test``."""
    tally: dict = defaultdict(Counter)
    for person in train:
        for t in person["trials"]:
            tally[t[feature]][t["validation"]] += 1
    hits = guesses = 0
    rng = random.Random(0)
    for person in test:
        def score(t):
            c = tally.get(t[feature], Counter())
            return ((c[True] + 1) / (c[True] + c[False] + 2), rng.random())
        k = sum(t["validation"] for t in person["trials"])
        ranked = sorted(person["trials"], key=score, reverse=True)[:k]
        hits += sum(t["validation"] for t in ranked)
        guesses += k
    return hits, guesses


@pytest.mark.slow  # 200 people through the whole flow: about a minute on two busy cores
def test_bot_reading_every_byte_finds_validation_trials_no_better_than_chance(study_dir,
                                                                               tmp_path):
    # Many starts from one test address; no disk sync needed for this test's answers.
    app = study_app(study_dir, tmp_path / "votes.db", START_RATE=(1, 0), SQLITE_SYNCHRONOUS="OFF")
    st = app.extensions["survey"]
    raw_size = {item_id: item["path"].stat().st_size for item_id, item in st.items.items()}
    people = []
    for _ in range(N_PEOPLE):
        client = app.test_client()
        assert start(client).status_code == 303
        observed = _observe(client)
        with client.session_transaction() as sess:
            pid = sess["p"]
        with st.db.session_scope() as s:
            truth = {t.index: t for t in s.query(Trial).filter(Trial.participant_id == pid)}
        people.append({"trials": [
            {"index": i, "key": key, "sizes": sizes,
             "raw": (raw_size[truth[i].left_item_id], raw_size[truth[i].right_item_id]),
             "validation": truth[i].kind == "validation"}
            for i, key, sizes in observed
        ]})
    for person in people:  # schedule context: how often this photo (its sizes) occurs
        seen = Counter(t["sizes"] for t in person["trials"])
        for t in person["trials"]:
            t["recur"] = seen[t["sizes"]]
            t["key_recur"] = (t["key"], t["recur"])
    assert all(len(p["trials"]) == N_TRIALS for p in people)
    # Two checks, three when the swapped repeat falls on one.
    assert all(sum(t["validation"] for t in p["trials"]) in (N_VALIDATION, N_VALIDATION + 1)
               for p in people)
    train, test = people[: N_PEOPLE // 2], people[N_PEOPLE // 2:]
    # Chance per guess: a person with k checks among n trials, guessing k, hits k/n per guess.
    ks = [sum(t["validation"] for t in p["trials"]) for p in test]
    chance = sum(k * k for k in ks) / N_TRIALS / sum(ks)

    for feature in ("key", "sizes", "recur", "key_recur", "index"):
        hits, guesses = _bot(train, test, feature)
        ci = binomtest(hits, guesses, chance).proportion_ci(0.99)
        assert ci.low <= chance <= ci.high, (feature, hits, guesses, chance)

    # Control: without the padding the same bot reads validation trials off the sizes.
    hits, guesses = _bot(train, test, "raw")
    assert binomtest(hits, guesses, chance, alternative="greater").pvalue < 1e-6
    assert hits / guesses > 0.9


def test_images_only_for_their_participant(study_dir, tmp_path):
    app = study_app(study_dir, tmp_path / "votes.db")
    a, b = app.test_client(), app.test_client()
    assert start(a).status_code == 303 and start(b).status_code == 303
    url = re.search(r'<image href="(/i/[^"]+)"', a.get("/trial").text).group(1)
    assert a.get(url).status_code == 200
    assert b.get(url).status_code == 404  # a leaked URL is useless to anybody else
    assert app.test_client().get(url).status_code == 404  # and without a session
