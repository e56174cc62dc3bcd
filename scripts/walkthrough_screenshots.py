"""Retake the screenshots of docs/walkthrough.md from a running ualign (the demo of `make run`).

    .venv/bin/python scripts/walkthrough_screenshots.py --base-url http://127.0.0.1:8000 \
        --password <the admin password printed by make run> [--only jobs]

Pages: the admin's study form (admin-study.png), the job progress page (jobs.png; take it while
Prepare runs), the annotator's consent and task pages (annotator-consent.png, annotator-task.png;
the study must be live; this joins as one invited annotator and answers nothing), and the results
page with simulated annotators (results.png; with --pilot it presses the study page's "Pilot with
simulated annotators" first and shows the pilot's results once the page says the pilot finished and
its results are up to date, waiting at most --wait seconds). The figures the walk-through quotes are
printed from the page shown (the finding, the judgment count, each policy's f̂ at the largest k).
Uses Playwright with Debian's Chromium.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = ("admin-study", "jobs", "annotator", "results")


def print_figures(page) -> None:
    """What the walk-through quotes, read off the results page just taken."""
    print(f"results page: {page.url}")
    print(f"status: {page.locator('#study-status').first.inner_text()}")
    for selector in ("#finding", "#unreviewed-note", "#quality"):
        if page.locator(selector).count():
            print(f"{selector}: {' '.join(page.locator(selector).first.inner_text().split())}")
    for row in page.locator("#robust-table tbody tr").all():
        print("robust:", " | ".join(cell.inner_text().strip() for cell in row.locator("td, th").all()))
    for row in page.locator("#differences-table tbody tr").all():
        print("difference:", " | ".join(cell.text_content().strip() for cell in row.locator("td").all()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", required=True)
    parser.add_argument("--slug", default="demo")
    parser.add_argument("--study-id", type=int, default=1)
    parser.add_argument("--invite", default="", help="the study's invite token (for the annotator pages)")
    parser.add_argument("--only", action="append", choices=SHOTS, help="take only these (repeatable)")
    parser.add_argument("--pilot", action="store_true", help="results of a new pilot with simulated annotators")
    parser.add_argument("--wait", type=int, default=1200,
                        help="at most this many seconds for the pilot to finish (with --pilot)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    only = set(args.only or SHOTS)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.base_url.rstrip("/")

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        staff = browser.new_context(viewport={"width": 1280, "height": 900})
        page = staff.new_page()
        page.goto(f"{base}/admin/login/")
        page.fill("#id_username", args.username)
        page.fill("#id_password", args.password)
        page.click("input[type=submit]")
        page.wait_for_url(f"{base}/admin/")
        if "admin-study" in only:
            page.goto(f"{base}/admin/studies/study/{args.study_id}/change/")
            page.screenshot(path=args.out / "admin-study.png", full_page=True)
        if "jobs" in only:
            page.goto(f"{base}/admin/studies/study/{args.study_id}/jobs/")
            page.wait_for_selector("#job-status #study-status")
            page.screenshot(path=args.out / "jobs.png", full_page=True)
        if "results" in only:
            if args.pilot:
                page.goto(f"{base}/admin/studies/study/{args.study_id}/change/")
                page.click("#pilot-study")  # opens the pilot's results page
                page.wait_for_url("**/results/?source=simulated")
                # The page polls itself; it says when the pilot's annotators are done, then recomputes.
                page.wait_for_selector("#study-status:has-text('Pilot finished')", timeout=args.wait * 1000)
                page.reload()
            else:
                page.goto(f"{base}/research/{args.slug}/results/?source=simulated")
            page.wait_for_selector("#freshness:has-text('up to date')", timeout=args.wait * 1000)
            page.screenshot(path=args.out / "results.png", full_page=True)
            print_figures(page)
        if "annotator" in only:
            if not args.invite:
                parser.error("--invite is needed for the annotator pages")
            person = browser.new_context(viewport={"width": 1280, "height": 900})
            page = person.new_page()
            page.goto(f"{base}/s/{args.slug}/?invite={args.invite}")  # the landing page
            page.click("button[type=submit]")  # Start: joins, then the consent page
            page.wait_for_url(f"**/s/{args.slug}/consent/")
            page.screenshot(path=args.out / "annotator-consent.png", full_page=True)
            page.click("button[value=accept]")
            page.click("button[type=submit]")  # the instructions' start button
            page.wait_for_selector("#comparison")
            page.screenshot(path=args.out / "annotator-task.png", full_page=True)
        browser.close()
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
