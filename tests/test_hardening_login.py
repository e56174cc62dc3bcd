"""Issue #24 finding 8: the admin's login is throttled (django-axes).

After AXES_FAILURE_LIMIT wrong passwords for one username from one address, that username and
address are locked out, the right password included; another address still logs in (a stranger
can't lock a researcher out), and so does the same address once the cool-off has passed.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

LOGIN = reverse("admin:login")


def attempt(client, password: str, address: str = "203.0.113.7"):
    return client.post(LOGIN, {"username": "researcher", "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_wrong_passwords_lock_out_the_right_one_too(client, researcher):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = attempt(client, "wrong")
        assert not logged_in(client)
    response = attempt(client, "pw-researcher")
    assert response.status_code == 429
    assert not logged_in(client)


def test_fewer_failures_than_the_limit_do_not_lock_out_and_a_success_resets_them(client, researcher):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, "wrong")
    assert attempt(client, "pw-researcher").status_code == 302
    assert logged_in(client)
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, "wrong")
    assert attempt(client, "pw-researcher").status_code == 302  # the count started again


def test_another_address_can_still_log_in(client, researcher):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "wrong", address="203.0.113.7")
    assert attempt(client, "pw-researcher", address="198.51.100.20").status_code == 302
    assert logged_in(client)


def test_the_lockout_ends_after_the_cool_off(client, researcher):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "wrong")
    assert attempt(client, "pw-researcher").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert attempt(client, "pw-researcher").status_code == 302
    assert logged_in(client)


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(client, researcher, settings):
    settings.UALIGN_TRUSTED_PROXY_HOPS = 1
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(LOGIN, {"username": "researcher", "password": "wrong"}, REMOTE_ADDR="127.0.0.1",
                    HTTP_X_FORWARDED_FOR="203.0.113.7")
    # Another client behind the same proxy is not locked out by the first one's failures.
    response = client.post(LOGIN, {"username": "researcher", "password": "pw-researcher", "next": "/admin/"},
                           REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.20")
    assert response.status_code == 302
