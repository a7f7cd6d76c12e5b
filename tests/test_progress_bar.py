"""The progress bar's title: the run's step against its budget, never `Epoch 1/-2`."""

from synthmed_lightning.callbacks.progress import run_description


def test_step_bounded_runs_show_the_step_budget_not_a_negative_epoch_count():
    assert run_description(1, -1, 420, 1600) == "Epoch 1 · step 420/1600"
    assert "/-" not in run_description(0, -1, 0, 80)


def test_epoch_bounded_runs_keep_lightnings_epoch_count():
    assert run_description(3, 10, 50, -1) == "Epoch 3/9"
