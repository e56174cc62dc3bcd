"""The picks as TRL DPO preference pairs, JSON Lines and Parquet (issue #25)."""

from __future__ import annotations

import importlib.util
import io
import json

import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from studies.estimate import preference_pairs
from studies.models import Judgment
from tests.factories import make_item, make_participant
from tests.judgments import make_judged_study, make_judgment

pytestmark = pytest.mark.django_db


def expected_rows(study, origin="real"):
    """From the judgments themselves: (judgment, chosen text, rejected text) per not-chosen shown text."""
    rows = set()
    judgments = Judgment.objects.filter(assignment__participant__study=study, cant_decide=False,
                                        assignment__item__is_attention_check=False)
    if origin == "real":
        judgments = judgments.filter(assignment__participant__is_simulated=False)
    for judgment in judgments.select_related("chosen__candidate"):
        for shown in judgment.assignment.item.shown.select_related("candidate"):
            if shown.pk != judgment.chosen_id:
                rows.add((judgment.pk, judgment.chosen.candidate.text, shown.candidate.text))
    return rows


def test_one_row_per_chosen_and_not_chosen_pair_of_every_pick():
    study = make_judged_study()
    three = make_item(study=study, prompt=study.prompts.first(), policy=study.policies.get(name="alpha"),
                      texts=["one", "two =SUM(A1)", "three ✓"], counts=[(1, 0), (1, 0), (0, 1)], replicate=1)
    make_judgment(item=three, participant=make_participant(study=study), pick=1)
    rows = list(preference_pairs.iter_pairs(study))
    assert {(r["judgment_id"], r["chosen"], r["rejected"]) for r in rows} == expected_rows(study)
    picked = [r for r in rows if r["item_id"] == three.pk]
    assert len(picked) == 2  # a pick among three texts gives two pairs
    assert {r["rejected"] for r in picked} == {"one", "three ✓"}
    assert all(r["chosen"] == "two =SUM(A1)" for r in picked)  # texts exact: no spreadsheet guard
    assert all(r["prompt"] == three.prompt.text and r["k"] == three.k for r in picked)
    assert not any(r["is_simulated"] for r in rows)
    everyone = list(preference_pairs.iter_pairs(study, origin="all"))
    assert {(r["judgment_id"], r["chosen"], r["rejected"]) for r in everyone} == expected_rows(study, "all")
    assert len(everyone) > len(rows)


def test_the_jsonl_download_reads_back_with_json(researcher_client):
    study = make_judged_study()
    response = researcher_client.get(reverse("studies:export_preference_pairs", args=[study.slug, "jsonl"]))
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    lines = b"".join(response.streaming_content).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows
    assert set(preference_pairs.COLUMNS) == set(rows[0])
    assert {(r["judgment_id"], r["chosen"], r["rejected"]) for r in rows} == expected_rows(study)


def test_the_parquet_download_reads_back_with_pyarrow(researcher_client):
    study = make_judged_study()
    response = researcher_client.get(reverse("studies:export_preference_pairs", args=[study.slug, "parquet"]))
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == list(preference_pairs.COLUMNS)
    rows = table.to_pylist()
    assert {(r["judgment_id"], r["chosen"], r["rejected"]) for r in rows} == expected_rows(study)
    assert all(0.0 <= r["credit"] <= 1.0 for r in rows)


def test_an_unknown_format_is_a_404_and_outsiders_get_nothing(researcher_client, client, outsider):
    study = make_judged_study()
    assert researcher_client.get(f"/research/{study.slug}/export/preference-pairs.csv").status_code == 404
    client.force_login(outsider)
    response = client.get(reverse("studies:export_preference_pairs", args=[study.slug, "jsonl"]))
    assert response.status_code == 302  # not staff: to the login page


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="the datasets library is not installed")
def test_datasets_loads_the_jsonl(tmp_path):
    import datasets

    study = make_judged_study()
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(preference_pairs.iter_jsonl(study)), encoding="utf-8")
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(loaded.column_names)
    assert len(loaded) == len(expected_rows(study))
