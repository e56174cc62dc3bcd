"""The participant's path, from joining to close-out; the judgment step of the data path.

- `flow`: joining (invitation, join rate), seats, consent and the comprehension check;
- `assign`: handing out tasks (the next open item, balanced slot order) and progress;
- `picking`: a pick, saved exactly once (`record_judgment`), and `pick`, the annotator's pick as
  one call returning an `Outcome`; completion;
- `participants`: the sweep, returns, the researcher's review, close-out, the study page's figures;
- `rules`: the one spelling of quota, live assignment, open item, the items' counters, "has
  worked" and the timeout, for the hot path and the rare paths alike;
- `sql`: the hot path's statements in SQL, through Django's cursor (prepared on PostgreSQL by
  `ualign_web/db_backend`).

Imports one way: participants → picking / flow → assign → rules → sql → models.
"""
