"""Estimate: a study's judgments → f(k) with honest intervals, its CSV exports, and its plan.

`results` reads the judgments into arrays for `workers.stats` and summarises them; `results_cache`
keeps a snapshot for the results page and its poll; `export` streams the CSVs; `plans` turns a
study into the planner's design and `planning_views` is the admin's Plan page.
"""
