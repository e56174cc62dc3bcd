"""The join limit holds under concurrent requests (issue #24, finding 1): the limit was a read
(count the client's recent participants) then a write (create one), so concurrent joins from one
client passed it (21 of the 20 allowed were created). The joins of a study now count and insert
under the study's row lock (`judgment.flow.check_join_rate`): PostgreSQL, real threads."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from studies.judgment import flow
from studies.judgment.flow import TooManyJoins
from studies.models import Invite, Participant, Study
from tests.factories import in_threads, make_live_study

pytestmark = pytest.mark.django_db(transaction=True)



def test_concurrent_joins_from_one_client_never_pass_the_limit(settings):
    settings.UALIGN_JOIN_LIMIT, settings.UALIGN_JOIN_WINDOW_SECONDS = 3, 3600
    study = make_live_study(n_items=10, annotations_per_item=10)

    results = in_threads(12, lambda i: flow.join_study(study=study, client_key="one-address"))

    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, TooManyJoins)]
    assert not unexpected, unexpected
    assert sum(isinstance(r, Participant) for r in results) == 3
    assert Participant.objects.filter(study=study, client_key="one-address").count() == 3
    assert sum(isinstance(r, TooManyJoins) for r in results) == 9


def test_concurrent_joins_with_one_invite_take_one_place():
    study = make_live_study(n_items=10, annotations_per_item=10, recruitment=Study.Recruitment.INVITES)
    invite = flow.create_invites(study=study, count=1)[0]

    results = in_threads(6, lambda i: flow.join_study(study=study, client_key=f"client-{i}", invite=invite.token))

    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, flow.LinkRefused)]
    assert not unexpected, unexpected
    joined = [r for r in results if isinstance(r, Participant)]
    assert len(joined) == 1
    assert Participant.objects.filter(study=study).count() == 1
    assert Invite.objects.get(pk=invite.pk).used_by_id == joined[0].pk


def test_concurrent_join_posts_from_one_address_never_pass_the_limit(settings):
    """The reported attack, through the join page: concurrent POSTs from one address."""
    settings.UALIGN_JOIN_LIMIT, settings.UALIGN_JOIN_WINDOW_SECONDS = 2, 3600
    study = make_live_study(n_items=10, annotations_per_item=10)
    join_url = reverse("studies:join", args=[study.slug])

    def post(i: int) -> int:
        return Client(REMOTE_ADDR="203.0.113.7").post(join_url, {"invite": study.invite_token}).status_code

    statuses = in_threads(10, post)
    assert sorted(statuses) == [200, 200] + [429] * 8  # two consent pages
    assert Participant.objects.filter(study=study).count() == 2
