"""Attacks tried against the real server (``hrbench survey serve`` under waitress), where the
Flask test client would hide what the server in front of the app does."""

from __future__ import annotations

import re

import pytest
import requests
from survey_helpers import ServerProcess, make_fake_run

from survey_app.study import create_study

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    run = make_fake_run(root / "run")
    create_study(run, root / "study", resolution=128, trials_per_participant=4, validation=1,
                 progress=False)
    return root / "study"


def _wrong_login(url: str, forwarded_for: str) -> int:
    s = requests.Session()
    page = s.get(url + "/admin/login", headers={"X-Forwarded-For": forwarded_for})
    token = _CSRF.search(page.text).group(1)
    return s.post(url + "/admin/login", data={"csrf_token": token, "token": "guess"},
                  headers={"X-Forwarded-For": forwarded_for}, allow_redirects=False).status_code


@pytest.mark.parametrize("proxies", [1, 0])
def test_forwarded_headers_reach_the_app_only_with_proxies(study_dir, tmp_path, proxies):
    # Waitress strips X-Forwarded-* by default: --proxies once had no effect under serve.
    server = ServerProcess(study_dir, threads=4, extra=("--proxies", str(proxies)),
                           log_path=tmp_path / "serve.log").start()
    try:
        https = requests.get(server.url + "/", headers={"X-Forwarded-Proto": "https"})
        assert ("Secure" in https.headers["Set-Cookie"]) == bool(proxies)
        assert ("Strict-Transport-Security" in https.headers) == bool(proxies)
        # The admin login limit (10 at once) per client address.
        guesser = [_wrong_login(server.url, "198.51.100.7") for _ in range(11)]
        assert guesser[0] == 401 and guesser[-1] == 429
        other = _wrong_login(server.url, "192.0.2.10")
        # Behind a proxy the other client has its own bucket; without --proxies the header
        # is not trusted, so it shares the socket address's (already empty) bucket.
        assert other == (401 if proxies else 429)
    finally:
        server.stop()
