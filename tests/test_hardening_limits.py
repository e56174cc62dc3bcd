"""Issue #24 finding 9: request bodies are refused from their headers, before they are read.

An anonymous 50 MB multipart POST to a participant's page was spooled to a temporary file before
CSRF refused it. Now any body above the largest upload (plus its envelope) gets a 413, the
annotator's pages take at most 256 KiB, and a body without a Content-Length gets a 411: through the
test client, the middleware on its own (the body stream is never touched), and a real gunicorn.
"""

from __future__ import annotations

import socket

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import RequestFactory
from django.urls import reverse

from studies.models import Participant, Prompt
from tests.factories import make_study
from tests.prodserver import Gunicorn, collected_static, free_port, production_env  # noqa: F401  (fixture)
from ualign_web.limits import BodyLimitMiddleware

MiB = 1024 * 1024


@pytest.mark.django_db
def test_a_large_anonymous_post_to_a_participants_page_is_refused_with_413(client):
    study = make_study(status="live")
    body = b"invite=" + study.invite_token.encode() + b"&x=" + b"a" * (300 * 1024)
    response = client.post(f"/s/{study.slug}/", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert not Participant.objects.exists()


@pytest.mark.django_db
def test_a_large_multipart_upload_to_a_participants_page_is_refused_with_413(client):
    study = make_study(status="live")
    upload = SimpleUploadedFile("big.bin", b"\0" * (2 * MiB))
    response = client.post(f"/s/{study.slug}/", {"invite": study.invite_token, "file": upload})
    assert response.status_code == 413


@pytest.mark.django_db
def test_an_ordinary_join_still_passes(client):
    study = make_study(status="live")
    response = client.post(f"/s/{study.slug}/", {"invite": study.invite_token})
    assert response.status_code != 413


@pytest.mark.django_db
def test_an_upload_past_the_largest_allowed_is_refused_anywhere_even_for_staff(researcher_client, settings):
    study = make_study()
    upload = SimpleUploadedFile("p.csv", b"text\n" + b"a" * (settings.UALIGN_MAX_UPLOAD_BYTES + 2 * MiB))
    response = researcher_client.post(reverse("admin:studies_study_import_prompts", args=[study.pk]), {"file": upload})
    assert response.status_code == 413
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_an_upload_at_the_limit_reaches_the_form_which_says_why(researcher_client, settings):
    study = make_study()
    settings.UALIGN_MAX_UPLOAD_BYTES = 1000
    settings.UALIGN_MAX_REQUEST_BYTES = 1000 + MiB
    upload = SimpleUploadedFile("p.csv", b"text\n" + b"a" * 2000)
    response = researcher_client.post(reverse("admin:studies_study_import_prompts", args=[study.pk]), {"file": upload})
    assert response.status_code != 413  # the middleware let it through; the form's own cap answers


def test_the_body_is_never_read_when_refused():
    reached = []
    middleware = BodyLimitMiddleware(lambda request: reached.append(request))
    request = RequestFactory().post("/s/any/", data=b"x" * (300 * 1024), content_type="application/octet-stream")
    payload = request.META["wsgi.input"]
    assert middleware(request).status_code == 413
    assert not payload.read_started  # not one byte read
    assert not reached


@pytest.mark.parametrize("path", ["/s/any/", "/admin/login/"])
def test_a_body_without_a_content_length_is_refused_with_411(client, path):
    response = client.generic("POST", path, data=b"", HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 411


def test_a_content_length_that_is_not_a_number_is_refused_with_400():
    middleware = BodyLimitMiddleware(lambda request: None)
    request = RequestFactory().post("/s/any/", data=b"a=1", content_type="application/x-www-form-urlencoded",
                                    CONTENT_LENGTH="12abc")
    assert middleware(request).status_code == 400


# --- Through a real gunicorn, as in production ----------------------------------------------


def _send(base_port: int, head: str, body: bytes) -> bytes:
    """Send a request's head and the first bytes of its body; read the answer (no more is sent)."""
    with socket.create_connection(("127.0.0.1", base_port), timeout=20) as s:
        s.sendall(head.encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.django_db
def test_gunicorn_answers_413_to_a_declared_50_mb_body_without_waiting_for_it(collected_static, tmp_path):  # noqa: F811
    server = Gunicorn(production_env(static_root=collected_static, var_dir=tmp_path / "var", port=free_port(),
                                     SECURE_SSL_REDIRECT="false"), tmp_path / "gunicorn.log")
    server.start()
    try:
        port = int(server.env["BIND"].rsplit(":", 1)[1])
        big = (f"POST /s/any-study/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
               f"Content-Length: {50 * MiB}\r\n\r\n")
        assert _send(port, big, b"--b\r\n" + b"a" * 1024).startswith(b"HTTP/1.1 413"), server.log()
        chunked = ("POST /s/any-study/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n")
        assert _send(port, chunked, b"400\r\n" + b"a" * 1024 + b"\r\n").startswith(b"HTTP/1.1 411"), server.log()
    finally:
        server.stop()
