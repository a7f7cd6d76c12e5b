"""experiment=mia_splits composes into a study whose steps are the real-data U-Net (the audits'
encoder) and, per split, Stage I, Stage II, an export and its audit against that split's folder."""

import pytest

from synthmed_lightning.stages.study import build_plan, study_steps
from synthmed_lightning.study.mia_splits import MiaSplits


@pytest.fixture
def experiment(tmp_path, cli_config):
    return lambda *overrides: cli_config("experiment=mia_splits", "profile=smoke", f"study.out_dir={tmp_path / 'out'}",
                                         *overrides)


def test_the_experiment_plans_four_steps_per_split_after_the_real_unet(experiment, tmp_path):
    cfg = experiment("study.mia_splits.runs=4")
    steps = study_steps(build_plan(cfg), MiaSplits.from_config(cfg.study.mia_splits))
    names = [s.name for s in steps]
    assert names[0] == "segment_real" and len(steps) == 1 + 4 * 4
    assert names[-4:] == ["train_mask_split3", "train_image_split3", "generate_dual_gan_split3", "audit_split3"]
    audit = steps[-1]
    assert f"data.root='{tmp_path / 'out' / 'mia_splits' / 'split3'}'" in audit.arguments
    assert set(audit.after) == {"generate_dual_gan_split3", "segment_real"}


def test_without_mia_splits_the_study_has_no_split_steps(experiment):
    cfg = experiment("study.mia_splits.runs=0")
    assert MiaSplits.from_config(cfg.study.mia_splits) is None
    assert not any("split" in s.name for s in study_steps(build_plan(cfg), None))
