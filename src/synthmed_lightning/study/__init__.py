"""The synthetic-vs-real study (`stage=study`, `make reproduce-paper`): plan, runner, fidelity, report."""
