"""Hypothesis fuzzes the join, pick and import endpoints: 4xx with a message and nothing saved, never a 500.

Fields are sent as raw form bodies and query strings, so they can hold anything a hostile client
can: invalid UTF-8, NUL, encoded lone surrogates, control characters, other scripts' digits,
huge numbers. Django's test client re-raises a server error, so a 500 fails the test outright.
Each example runs in a savepoint that is rolled back, so every example starts from the same rows.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studies.forms import IDENTIFIER
from studies.models import Job, Judgment, Participant, Prompt, Study
from studies.validation import text_problem
from tests.factories import make_live_study, make_study

pytestmark = pytest.mark.django_db

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FORM = "application/x-www-form-urlencoded"

# Text with everything in it: surrogates (sent as their UTF-8-ish bytes), controls, other digits.
any_text = st.text(st.characters(exclude_categories=[]), max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass"))
nasty = st.sampled_from(["\x00", "\x07", "\x1b[31m", "\u202e", "٢", "²", "9" * 40, "-1", "1e3", " 1 ", "%", "&", "="])
field_value = st.one_of(
    any_text,
    st.binary(max_size=80),
    nasty.map(str.encode),
    st.text(max_size=5000).map(str.encode),
)


class Rollback(Exception):
    pass


def isolated(example) -> None:
    """Run `example` in a savepoint rolled back afterwards."""
    try:
        with transaction.atomic():
            example()
            raise Rollback
    except Rollback:
        pass


def encode(fields: dict[str, bytes]) -> bytes:
    return "&".join(f"{name}={urllib.parse.quote_from_bytes(value)}" for name, value in fields.items()).encode()


def has_message(content: bytes) -> bool:
    return b"<h1>" in content or b'role="alert"' in content


# --- Join ---------------------------------------------------------------------------------------


@pytest.fixture
def joinable() -> Study:
    """A live study that already has a participant with the PID "KNOWN"."""
    study = make_live_study()
    Participant.objects.create(study=study, external_id="KNOWN")
    return study


@FUZZ
@given(
    method=st.sampled_from(["get", "post"]),
    invite=st.one_of(st.just(b"KEY"), field_value),
    pid=st.one_of(st.sampled_from([b"", b"60a1b2c3d4e5f60718293a4b", b"KNOWN"]), field_value),
    study_id=st.one_of(st.just(b"st-1"), field_value),
    session_id=st.one_of(st.just(b"se-1"), field_value),
)
def test_fuzzed_study_links_get_a_4xx_with_a_message_and_create_nobody(joinable, method, invite, pid, study_id, session_id):
    study = joinable
    fields = {"invite": invite.replace(b"KEY", study.invite_token.encode()), "PROLIFIC_PID": pid,
              "STUDY_ID": study_id, "SESSION_ID": session_id}
    url = reverse("studies:join", args=[study.slug])

    def example() -> None:
        before = Participant.objects.count()
        client = Client()
        if method == "get":
            response = client.get(f"{url}?{encode(fields).decode()}")
        else:
            response = client.post(url, encode(fields), content_type=FORM)
        assert response.status_code in (200, 400, 403, 429)
        created = Participant.objects.count() - before
        if created:
            assert method == "post"
            assert created == 1
            assert response.status_code == 200
            assert b'name="decision"' in response.content  # the consent page, in the join's answer
            new = Participant.objects.latest("id")
            for value in (new.external_id, new.prolific_study_id, new.prolific_session_id):
                assert value == "" or IDENTIFIER.fullmatch(value)
        else:
            assert created == 0
            assert has_message(response.content)

    isolated(example)


# --- Pick ---------------------------------------------------------------------------------------


@pytest.fixture
def started() -> tuple[Study, Client, int, int]:
    """A live study, a browser whose participant has a task open (mine), and someone else's task."""
    study = make_live_study()
    client, other = Client(), Client()
    return study, client, _start(client, study), _start(other, study)


@FUZZ
@given(
    assignment=st.one_of(st.just(b"MINE"), st.just(b"THEIRS"), field_value),
    choice=st.one_of(st.sampled_from([b"1", b"2", b"3", b"0"]), field_value),
    cant_decide=st.one_of(st.just(b""), field_value),
    rationale=st.one_of(any_text, st.text(min_size=4990, max_size=5200).map(str.encode), field_value),
    htmx=st.booleans(),
)
def test_fuzzed_picks_save_one_valid_judgment_or_get_a_4xx_with_a_message(started, assignment, choice, cant_decide,
                                                                          rationale, htmx):
    study, client, mine, theirs = started
    fields = {
        "assignment": assignment.replace(b"MINE", str(mine).encode()).replace(b"THEIRS", str(theirs).encode()),
        "choice": choice, "rationale": rationale,
    }
    if cant_decide:
        fields["cant_decide"] = cant_decide
    url = reverse("studies:submit_judgment", args=[study.slug])
    headers = {"HX-Request": "true"} if htmx else {}

    def example() -> None:
        response = client.post(url, encode(fields), content_type=FORM, headers=headers)
        assert response.status_code in (200, 302, 400, 404)
        saved = list(Judgment.objects.all())
        assert not Judgment.objects.filter(assignment_id=theirs).exists()
        if saved:
            (judgment,) = saved
            assert judgment.assignment_id == mine
            assert judgment.chosen_slot in (1, 2)
            assert re.fullmatch(rb"\s*[12]\s*", choice)  # only a plain 1 or 2 picks
            assert not text_problem(judgment.rationale)
            assert len(judgment.rationale) <= 5000
        else:
            assert has_message(response.content)
            assert len(response.content) < 40_000  # an oversized note is never echoed back

    isolated(example)


def _start(client: Client, study: Study) -> int:
    client.post(reverse("studies:join", args=[study.slug]), {"invite": study.invite_token})
    client.post(reverse("studies:consent", args=[study.slug]), {"decision": "accept"})
    client.post(reverse("studies:instructions", args=[study.slug]))
    return client.get(reverse("studies:task", args=[study.slug])).context["assignment"].pk


# --- Prompt import ------------------------------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(st.characters(exclude_categories=[]), max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)
hostile_json = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, '"\\u0000"', '"\\ud800"', '"\\udfff x"', '"\\u0007"',
    "[" * 30 + "]" * 30, "[" * 5000, "{", '"unterminated', "tru", "",
])


@st.composite
def jsonl_line(draw) -> str:
    if draw(st.booleans()):
        obj = {"text": draw(st.one_of(st.text(st.characters(exclude_categories=[]), max_size=30), json_value))}
        if draw(st.booleans()):
            obj["external_id"] = draw(st.one_of(st.text(max_size=210), st.integers(), json_value))
        if draw(st.booleans()):
            obj["metadata"] = draw(json_value)
        line = json.dumps(obj)
        if draw(st.booleans()):  # splice a hostile token into a valid line
            line = line[:-1] + ', "extra": ' + draw(hostile_json) + "}"
        return line
    return draw(hostile_json)


csv_cell = st.one_of(st.text(st.characters(exclude_categories=[]), max_size=30), hostile_json,
                     st.sampled_from(['"', '""', "\r", "\n", ",", "x" * 200_000]))


@st.composite
def upload_file(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["jsonl", "csv", "raw"]))
    if kind == "jsonl":
        text = "\n".join(draw(st.lists(jsonl_line(), min_size=1, max_size=6)))
    elif kind == "csv":
        header = draw(st.sampled_from(["text", "text,external_id", "text,metadata", "text,topic", "topic"]))
        rows = draw(st.lists(st.lists(csv_cell, min_size=1, max_size=3), min_size=1, max_size=5))
        text = header + "\n" + "\n".join(",".join(row) for row in rows)
    else:
        return draw(st.sampled_from(["p.csv", "p.jsonl", "p.txt"])), draw(st.binary(max_size=300))
    return f"prompts.{kind}", text.encode("utf-8", "surrogatepass")


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(upload=upload_file())
def test_fuzzed_prompt_files_are_imported_whole_or_refused_with_messages(researcher_client, upload):
    study = make_study()
    url = reverse("admin:studies_study_import_prompts", args=[study.pk])
    filename, data = upload

    def example() -> None:
        response = researcher_client.post(url, {"file": SimpleUploadedFile(filename, data)})
        prompts = list(Prompt.objects.filter(study=study))
        if response.status_code == 302 and "?job=" in response["Location"]:
            # Past UALIGN_IMPORT_BACKGROUND_BYTES a worker imports the file (no worker runs
            # here): the upload waits in a job row and nothing is saved in the request.
            assert not prompts
            assert Job.objects.filter(study=study, kind=Job.Kind.IMPORT_PROMPTS).count() == 1
        elif response.status_code == 302:
            assert prompts
            for prompt in prompts:
                assert not text_problem(prompt.text)
                assert not text_problem(prompt.external_id)
        else:
            assert response.status_code == 200
            assert not prompts
            page = response.content.decode()
            assert "Nothing was imported" in page or "errorlist" in page

    isolated(example)
