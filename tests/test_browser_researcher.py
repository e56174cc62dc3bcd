"""The researcher's study day in real headless Chromium (issues #12 and #25), from the admin only:
create a study with two policies, import its prompts, Plan (the fit check's sentence), Go live
(refused while a blocking pre-flight problem stands, then fixed), Preview (no place taken, nothing
saved), two annotators in their own browsers, Pause (a newcomer is told; the annotator mid-study
waits on a page that moves on by itself on Resume), Close (the final wording, the code for who
worked), the results page's finding and paired difference, and Prolific's review: a rejection that
needs its reason, the review list and the bonus CSV.

Preparing is replaced by comparison items built with the test factories (the pipeline has its own
tests, through a real worker, in tests/test_tasks_worker.py); everything else goes through the pages.
Each step asserts what the page says and what the database holds; waits are on explicit marks
(the task's data-ready, a heading, a polled figure), never on time.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from studies.estimate.results import compute_results
from studies.models import Judgment, Participant, Policy, Study
from tests.browser_flow import join
from tests.factories import make_item

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROMPTS_CSV = b"text,external_id\nName a colour.,c1\nGreet the user.,c2\n"
PID_PARTIAL = "5f1a2b3c4d5e6f7a8b9c0d1e"  # stops after 2 of 4 tasks: paid a bonus
PID_FULL = "60a1b2c3d4e5f60718293a4b"  # does all 4: rejected, with a reason
SLUG = "tea-or-coffee"
PER_TASK_WAIT_MS = 30_000  # the waiting page asks every 10 s; the places figure is polled every 5 s


def log_in(page, base_url: str) -> None:
    page.goto(f"{base_url}{reverse('admin:login')}")
    page.get_by_label("Username").fill("researcher")
    page.get_by_label("Password").fill("pw-researcher")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}{reverse('admin:index')}")


def save_and_continue(page) -> None:
    with page.expect_navigation():
        page.locator("input[name=_continue]").click()
    errors = [e.inner_text() for e in page.locator("ul.errorlist").all()]
    assert not errors, errors  # the form refused something: say what


def create_study(page, base_url: str) -> Study:
    """The admin's add form: the design, two policies in the inline, and no completion code."""
    page.goto(f"{base_url}{reverse('admin:studies_study_add')}")
    page.locator("#id_title").fill("Tea or coffee")
    page.locator("#id_title").press("Tab")
    expect(page.locator("#id_slug")).to_have_value(SLUG)  # filled in from the title
    page.locator("#id_consent_text").fill("## Consent\n\nYou will compare short answers. Taking part is voluntary.")
    page.locator("#id_instructions").fill("Read the prompt, then pick the response you would rather receive.")
    page.locator("#id_k_values").fill("2")
    page.locator("#id_annotations_per_item").fill("2")
    page.locator("#id_items_per_participant").fill("4")
    page.locator("#id_max_participants").fill("1")
    page.locator("#id_attention_check_rate").fill("0")
    page.locator("#id_completion_code").fill("")
    for i, (name, kind) in enumerate([("u-align", Policy.Kind.MULTIPLAYER), ("nlhf", Policy.Kind.NLHF)]):
        page.locator("#policies-group a.addlink").click()
        page.locator(f"#id_policies-{i}-name").fill(name)
        page.locator(f"#id_policies-{i}-kind").select_option(kind)
    save_and_continue(page)
    study = Study.objects.get(slug=SLUG)
    assert list(study.policies.order_by("id").values_list("name", "kind")) == [
        ("u-align", Policy.Kind.MULTIPLAYER), ("nlhf", Policy.Kind.NLHF)]  # fmt: skip
    assert (study.status, study.completion_code, study.k_values) == (Study.Status.DRAFT, "", [2])
    return study


def import_prompts(page, study: Study) -> None:
    page.get_by_role("link", name="import from CSV or JSONL").click()
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "prompts.csv", "mimeType": "text/csv", "buffer": PROMPTS_CSV}]
    )
    page.get_by_role("button", name="Import").click()
    page.wait_for_url(f"**{reverse('admin:studies_study_change', args=[study.pk])}")
    assert "Imported 2 prompts" in page.locator("ul.messagelist").inner_text()
    assert sorted(study.prompts.values_list("external_id", flat=True)) == ["c1", "c2"]


def prepare_with_factories(study: Study) -> None:
    """What Prepare leaves behind: per prompt, each policy's item against the adversary (k = 2,
    m = 1), and the study ready. The equilibrium's own text and the adversary's differ on every item."""
    for policy in study.policies.order_by("id"):
        for prompt in study.prompts.order_by("id"):
            make_item(study=study, prompt=prompt, policy=policy, counts=[(2, 0), (0, 1)],
                      texts=[f"{policy.name} on {prompt.external_id}", f"adversary on {prompt.external_id}"])
    Study.objects.filter(pk=study.pk).update(status=Study.Status.READY)


def move(page, name: str, label: str) -> None:
    """Press a lifecycle button on the study's page and confirm it."""
    page.locator(f"#study-{name}").click()
    assert page.locator("#confirm-heading").inner_text() == f"{label}?"
    page.locator("#confirm-button").click()
    page.wait_for_selector("ul.messagelist")


def plan_states_the_fit(page) -> None:
    page.locator("#plan-study").click()
    page.wait_for_selector("#plan-form")  # the Plan page (the study page shows the same sentence)
    fit = page.locator("#design-fit").inner_text()
    assert fit.startswith("The design needs 8 judgments (2 participants at 4 items each, counted from its comparison items)")
    assert "its 1 places give only 4 (50%): set the places to 2, or the items per participant to 8" in fit
    page.go_back()


def go_live_refused_then_fixed(page, study: Study) -> None:
    page.locator("#study-go-live").click()
    page.wait_for_selector("#confirm-problem")  # after the pre-flight lists
    assert page.locator("#confirm-heading").inner_text() == "Go live?"
    assert "neither a completion code nor a completion URL" in page.locator("#preflight-blocking").inner_text()
    assert "set the places to 2" in page.locator("#preflight-warnings").inner_text()
    assert page.locator("#confirm-button").count() == 0
    assert "refused until the problems above are fixed" in page.locator("#confirm-problem").inner_text()
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY

    page.get_by_role("link", name="Back to the study").click()
    page.locator("#id_completion_code").fill("PAID-42")
    page.locator("#id_max_participants").fill("2")
    save_and_continue(page)
    assert page.locator("#design-fit").inner_text().endswith("its 2 places give 8: the design fits.")
    page.locator("#study-go-live").click()
    page.wait_for_selector("#confirm-button")  # after the pre-flight lists
    assert page.locator("#preflight-blocking").count() == 0
    assert "no completion URL" in page.locator("#preflight-warnings").inner_text()  # a warning: it may go live
    page.locator("#confirm-button").click()
    page.wait_for_selector("ul.messagelist")
    assert "is now live" in page.locator("ul.messagelist").inner_text()
    assert Study.objects.get(pk=study.pk).status == Study.Status.LIVE
    assert page.locator("#places-filled").inner_text() == "0 / 2"


def preview_saves_nothing(page, study: Study) -> None:
    with page.context.expect_page() as opened:
        page.locator("#preview-study").click()  # opens in a new tab
    preview = opened.value
    preview.wait_for_selector("#preview-banner")
    preview.get_by_role("button", name="I agree, continue").click()
    preview.get_by_role("button", name="Start the tasks").click()
    preview.wait_for_selector("#comparison[data-ready]")
    assert "Nothing you do here is saved" in preview.locator("#preview-banner").inner_text()
    assert preview.locator("#task-heading").text_content() == "Task 1 of 4"
    preview.get_by_role("button", name="Choose response 1").click()
    expect(preview.locator("#task-heading")).to_have_text("Task 2 of 4")
    assert "was not saved" in preview.locator("#comparison").inner_text()
    assert (Participant.objects.count(), Judgment.objects.count()) == (0, 0)
    assert study.items.filter(live_assignments__gt=0).count() == 0
    preview.close()
    assert page.locator("#places-filled").inner_text() == "0 / 2"


def start(page, base_url: str, study: Study, pid: str) -> None:
    join(page, base_url, study, query=f"&PROLIFIC_PID={pid}&STUDY_ID=s1&SESSION_ID=x{pid[:4]}")
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    page.wait_for_selector("#comparison[data-ready]")


def pick(page, position: int = 1) -> None:
    shown = page.locator("#comparison").get_attribute("data-assignment")
    page.get_by_role("button", name=f"Choose response {position}").click()
    # The next task once it takes picks, or the page that follows the last one (or a paused study's).
    page.wait_for_selector(f'#comparison[data-ready]:not([data-assignment="{shown}"]), #paused-heading, #completion-code')


def pause_and_resume(admin_page, partial, base: str, study: Study) -> None:
    """Pause: a newcomer is told politely; the one mid-study keeps "of 4", finishes the open task,
    then waits on a page that continues by itself on Resume."""
    move(admin_page, "pause", "Pause")
    assert Study.objects.get(pk=study.pk).status == Study.Status.PAUSED
    newcomer = partial.context.browser.new_context().new_page()
    newcomer.goto(f"{base}{study.participant_link()}")
    expect(newcomer.get_by_role("heading", name="This study is paused")).to_be_visible()
    newcomer.context.close()
    assert Participant.objects.filter(study=study).count() == 1  # the newcomer joined nothing

    partial.reload()
    partial.wait_for_selector("#comparison[data-ready]")
    assert partial.locator("#task-heading").text_content() == "Task 2 of 4"
    assert partial.locator("#progress").inner_text().startswith("1 of 4 done")
    partial.get_by_role("button", name="Choose response 2").click()
    partial.wait_for_selector("#paused-heading")
    assert "it continues with your next task by itself" in partial.locator("main").inner_text()
    assert Judgment.objects.filter(assignment__participant__external_id=PID_PARTIAL).count() == 2

    move(admin_page, "resume", "Resume")
    partial.wait_for_selector("#comparison[data-ready]", timeout=PER_TASK_WAIT_MS)  # no reload: the page's own poll
    assert partial.locator("#task-heading").text_content() == "Task 3 of 4"


def close_study(admin_page, partial, full, base: str, study: Study) -> None:
    """Close: the one who stopped mid-study gets the code on their next page; newcomers read that it closed."""
    move(admin_page, "close", "Close")
    assert admin_page.locator("#study-resume").count() == 0
    assert admin_page.locator("#study-go-live").count() == 0
    partial.reload()
    partial.wait_for_url(re.compile(rf".*/s/{study.slug}/done/$"))
    assert partial.locator("#completion-code").inner_text() == "PAID-42"
    newcomer = full.context.browser.new_context().new_page()
    newcomer.goto(f"{base}{study.participant_link()}")
    expect(newcomer.get_by_role("heading", name="This study has closed")).to_be_visible()
    assert "takes no more answers" in newcomer.locator("main").inner_text()
    newcomer.context.close()
    people = {p.external_id: p for p in Participant.objects.filter(study=study)}
    assert {pid: (p.status, p.tasks_done, p.completion_code) for pid, p in people.items()} == {
        PID_PARTIAL: (Participant.Status.COMPLETED, 2, "PAID-42"),
        PID_FULL: (Participant.Status.COMPLETED, 4, "PAID-42"),
    }


def results_state_the_finding(page, base: str, study: Study) -> None:
    """The finding in words, and the two policies' difference with its own paired interval."""
    page.goto(f"{base}{reverse('studies:results', args=[study.slug])}")
    page.wait_for_selector("#robust-table")
    assert Judgment.objects.filter(assignment__item__study=study).count() == 6
    expected = compute_results(Study.objects.get(pk=study.pk), origin="real")
    ours, theirs = ({c.policy: c.interval for c in expected.cells if c.opponent == "adversary"}[name]
                    for name in ("u-align", "nlhf"))  # fmt: skip
    finding = page.locator("#finding").inner_text()
    assert finding.startswith(f"Finding. At k = 2, u-align beats the adversary {ours.estimate:.2f} of the time, ")
    assert "than nlhf" in finding
    assert finding == f"Finding. {expected.finding}"
    page.locator("#differences summary").click()
    (row,) = page.locator("#differences-table tbody tr").all()
    cells = [td.inner_text() for td in row.locator("td").all()]
    difference = ours.estimate - theirs.estimate
    (paired,) = expected.differences
    assert cells[:5] == ["2", "1", "u-align", "nlhf", f"{difference:.3f}"]
    assert cells[5] == f"[{paired.interval.low:.3f}, {paired.interval.high:.3f}]"
    assert paired.interval.low <= difference <= paired.interval.high


def participants_page(page, base: str, study: Study, selected: list[str], action: str) -> None:
    page.goto(f"{base}{reverse('admin:studies_participant_changelist')}?study__id__exact={study.pk}")
    for pid in selected:
        page.locator("#result_list tr", has_text=pid).locator("input.action-select").check()
    page.locator("select[name=action]").select_option(action)
    page.get_by_role("button", name="Go").click()


def review_and_bonus(page, base: str, study: Study) -> None:
    """Prolific's review: tasks done of offered, a rejection that needs its reason, the lists as CSV."""
    page.goto(f"{base}{reverse('admin:studies_participant_changelist')}?study__id__exact={study.pk}")
    assert "2 of 4" in page.locator("#result_list tr", has_text=PID_PARTIAL).inner_text()
    assert "4 of 4" in page.locator("#result_list tr", has_text=PID_FULL).inner_text()

    participants_page(page, base, study, [PID_FULL], "mark_rejected")
    expect(page.get_by_role("heading", name="Reject with a reason")).to_be_visible()
    page.locator("#id_reason").fill("   ")  # not empty for the browser; blank for the form
    page.locator("#action-apply").click()
    expect(page.locator("ul.errorlist")).to_contain_text("This field is required")
    assert Participant.objects.get(external_id=PID_FULL).review_status == Participant.Review.PENDING
    page.locator("#id_reason").fill("Answered every task in under a second.")
    page.locator("#action-apply").click()
    page.wait_for_selector("ul.messagelist")
    assert "1 rejected." in page.locator("ul.messagelist").inner_text()
    rejected = Participant.objects.get(external_id=PID_FULL)
    assert (rejected.review_status, rejected.review_reason) == (Participant.Review.REJECTED,
                                                                "Answered every task in under a second.")

    with page.expect_download() as review_file:
        participants_page(page, base, study, [PID_FULL], "export_review_list")
    (row,) = csv.DictReader(io.StringIO(Path(review_file.value.path()).read_text(encoding="utf-8")))
    assert (row["decision"], row["review_reason"], row["tasks_done"]) == (
        "REJECT", "Answered every task in under a second.", "4")

    participants_page(page, base, study, [PID_PARTIAL, PID_FULL], "export_bonus_list")
    page.locator("#id_per_task").fill("0.15")
    with page.expect_download() as bonus_file:
        page.locator("#action-apply").click()
    assert bonus_file.value.suggested_filename == "participants-bonus.csv"
    # Only the partial completer, at 2 tasks × 0.15; the full one is rejected and had their share anyway.
    assert Path(bonus_file.value.path()).read_text(encoding="utf-8") == f"{PID_PARTIAL},0.30\n"


def test_a_researchers_study_day_from_the_admin(live_server, browser, researcher):
    base = live_server.url
    admin_page = browser.new_context().new_page()
    log_in(admin_page, base)
    study = create_study(admin_page, base)
    import_prompts(admin_page, study)
    prepare_with_factories(study)
    admin_page.reload()
    assert "so its design is fixed" in admin_page.locator("#design-fixed").inner_text()
    plan_states_the_fit(admin_page)
    go_live_refused_then_fixed(admin_page, study)
    preview_saves_nothing(admin_page, study)

    # Two annotators in their own browsers; the study page's places figure follows without a reload.
    partial = browser.new_context().new_page()
    start(partial, base, study, PID_PARTIAL)
    expect(admin_page.locator("#places-filled")).to_have_text("1 / 2", timeout=PER_TASK_WAIT_MS)
    pick(partial)
    pause_and_resume(admin_page, partial, base, study)
    full = browser.new_context().new_page()
    start(full, base, study, PID_FULL)
    for _ in range(4):
        pick(full)
    assert full.locator("#completion-code").inner_text() == "PAID-42"
    expect(admin_page.locator("#places-filled")).to_have_text("2 / 2", timeout=PER_TASK_WAIT_MS)

    close_study(admin_page, partial, full, base, study)
    results_state_the_finding(admin_page, base, study)
    review_and_bonus(admin_page, base, study)
