"""Contract tests: one set of cases per backend interface, run against the fake of
tests/fakes.py and against the real backend (the real runs are marked ``integration``)."""
