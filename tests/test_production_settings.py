"""Production behaviour that needs no server: probes, error pages, headers, settings checks."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import OperationalError
from django.urls import reverse

from studies import views
from tests.factories import make_study
from tests.prodserver import ROOT, server_database_url
from ualign_web.celery import app as celery_app

pytestmark = pytest.mark.django_db

SAVED = "Your picks so far are saved."


def _production_env(**overrides: str) -> dict[str, str]:
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50),
           "ALLOWED_HOSTS": "ualign.example.org", "DATABASE_URL": server_database_url()}
    env.update(overrides)
    return env


def test_check_deploy_is_clean_with_production_settings():
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=_production_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_database_cancels_a_statement_past_the_statement_timeout():
    code = ("from django.db import connection\n"
            "try:\n"
            "    connection.cursor().execute('SELECT pg_sleep(5)')\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT,
                            env=_production_env(DB_STATEMENT_TIMEOUT_MS="200"), capture_output=True, text=True,
                            timeout=120)
    assert "OperationalError canceling statement due to statement timeout" in result.stdout, result.stderr


def _database_settings(**overrides: str) -> dict:
    code = ("import json\nfrom django.conf import settings\n"
            "print(json.dumps({'prepared': settings.UALIGN_PREPARED_STATEMENTS, "
            "'options': settings.DATABASES['default']['OPTIONS']}))\n")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT,
                            env=_production_env(**overrides), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "prepared", "threshold", "options"),
    [
        # Direct to PostgreSQL: the hot path prepares, with generic plans sent at connect.
        ({}, True, 5, "-c statement_timeout=30000 -c plan_cache_mode=force_generic_plan"),
        ({"DB_PREPARED_STATEMENTS": "false"}, False, None, "-c statement_timeout=30000"),
        # PgBouncer refuses the options startup parameter, and only 1.21+ keeps prepared statements.
        ({"DB_PGBOUNCER": "true"}, False, None, None),
        ({"DB_PGBOUNCER": "true", "DB_PREPARED_STATEMENTS": "true"}, True, 5, None),
    ],
)
def test_prepared_statements_and_their_plan_mode_follow_the_connection_settings(env, prepared, threshold, options):
    """Django turns psycopg's preparation off (prepare_threshold None): the hot path's statements
    are prepared only where settings.py sets a threshold (studies/judgment/sql.py)."""
    database = _database_settings(**env)
    assert database["prepared"] is prepared
    assert database["options"].get("prepare_threshold") == threshold
    assert database["options"].get("options") == options


def test_healthz_answers_without_the_database_for_any_host_over_plain_http(client, django_assert_num_queries, settings):
    settings.ALLOWED_HOSTS = ["ualign.example.org"]
    settings.SECURE_SSL_REDIRECT = True
    with django_assert_num_queries(0):
        response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert response["Cache-Control"] == "no-store"


def test_readyz_is_ready_when_the_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert (response.status_code, response.content) == (200, b"ready\n")


@pytest.mark.parametrize("port_fixture", ["dead_port", "silent_port"])
def test_readyz_answers_503_with_a_reason_when_the_broker_is_down_or_hung(client, monkeypatch, request, port_fixture):
    port = request.getfixturevalue(port_fixture)
    monkeypatch.setattr(celery_app.conf, "broker_write_url", f"redis://127.0.0.1:{port}/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.content == b"broker unavailable\n"


def test_readyz_answers_503_with_a_reason_when_the_database_fails(client, monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("ualign_web.health.connection.cursor", broken_cursor)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.content == b"database unavailable\n"


def _live_study_with_participant(client):
    study = make_study(status="live")
    client.get(f"/s/{study.slug}/?invite={study.invite_token}")
    return study


def test_a_page_whose_database_is_unavailable_answers_503_with_retry_after_and_a_reassuring_page(client, monkeypatch):
    study = _live_study_with_participant(client)

    def unavailable(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(views, "_participant_for_slug", unavailable)  # what participant_step loads with (#14)
    client.raise_request_exception = False
    response = client.get(reverse("studies:consent", args=[study.slug]))
    assert response.status_code == 503
    assert response["Retry-After"] == "60"
    assert SAVED in response.content.decode()
    assert "try again in a minute" in response.content.decode()


def test_an_unexpected_error_answers_a_500_page_that_says_the_picks_are_saved(client, monkeypatch):
    study = _live_study_with_participant(client)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "_participant_for_slug", broken)
    client.raise_request_exception = False
    response = client.get(reverse("studies:consent", args=[study.slug]))
    assert response.status_code == 500
    assert SAVED in response.content.decode()


def test_an_unknown_address_gets_the_friendly_404_page(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "This page does not exist" in response.content.decode()
    assert SAVED.lower().rstrip(".") in response.content.decode().lower()


def test_pages_carry_a_content_security_policy_without_inline_script_or_style(client):
    response = client.get("/no/such/page/")
    csp = response["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "inline <script>"),
    (re.compile(r"<style\b", re.I), "<style> element"),
    (re.compile(r"\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "inline event handler"),
    (re.compile(r"\shx-on[:-]", re.I), "hx-on handler (needs eval)"),
]


def test_no_template_has_inline_script_or_style():
    """The CSP forbids them: every script and style of ualign is a file under static/."""
    problems = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = re.sub(r"{#.*?#}|{% comment %}.*?{% endcomment %}", "", path.read_text(), flags=re.S)
        problems += [f"{path.relative_to(ROOT)}: {what}" for pattern, what in INLINE if pattern.search(text)]
    assert problems == []


def test_htmx_is_configured_not_to_inject_its_indicator_style_and_the_css_ships_instead(client):
    study = make_study(status="live")
    page = client.get(f"/s/{study.slug}/?invite={study.invite_token}", follow=True).content.decode()
    assert '<meta name="htmx-config" content=\'{"includeIndicatorStyles": false' in page
    css = (Path(ROOT) / "static" / "ualign" / "htmx.css").read_text()
    assert ".htmx-request .htmx-indicator" in css
    assert "ualign/htmx.css" in page
