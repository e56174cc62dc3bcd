"""Pure statistics of a study's numbers: intervals, the planner's predictions, simulated studies.

Moved out of the Django app (issue #20): these modules take flat NumPy arrays and return frozen
dataclasses, so a notebook, a bench or a test calls them without a database. The Django side that
feeds them (queries → arrays) lives in `studies/estimate/`. No Django import anywhere here.
"""
