"""The participant's path: joining, consent, seats, picks, completion and close-out (see flow.py)."""
