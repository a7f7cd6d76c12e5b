"""A study records which code each finished step ran with, and a resumed study says when its finished
steps came from other code (their results are kept, not silently mixed)."""

import json
import logging
import sys

from synthmed_lightning.study.plan import Step
from synthmed_lightning.study.report import code_lines
from synthmed_lightning.study.runner import CODE_RECORD, code_fingerprint, run_steps


def _step(name: str, tmp_path) -> Step:
    code = (f"import pathlib; p = pathlib.Path(r'{tmp_path}/runs/{name}'); p.mkdir(parents=True, exist_ok=True); "
            "(p / 'done.txt').write_text('ok')")
    return Step(name, "x", ("-c", code), (), output="done.txt")


def test_finished_steps_record_the_code_and_a_resume_after_a_change_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("synthmed_lightning.study.runner._command", lambda step: [sys.executable, *step.arguments])
    run_steps([_step("a", tmp_path)], tmp_path, workers=1, threads=1)
    record = json.loads((tmp_path / CODE_RECORD).read_text())
    assert record == {"a": code_fingerprint()} and len(record["a"]) == 12

    monkeypatch.setattr("synthmed_lightning.study.runner.code_fingerprint", lambda: "0123456789ab")
    with caplog.at_level(logging.WARNING, logger="synthmed_lightning.study.runner"):
        run_steps([_step("a", tmp_path), _step("b", tmp_path)], tmp_path, workers=1, threads=1)
    assert "1 finished step(s) ran with other code than now (0123456789ab): a" in caplog.text
    assert json.loads((tmp_path / CODE_RECORD).read_text()) == {"a": record["a"], "b": "0123456789ab"}


def test_the_fingerprint_changes_with_a_config_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "x.yaml").write_text("a: 1\n")
    monkeypatch.setattr("synthmed_lightning.study.runner.config_dir", lambda: conf)
    before = code_fingerprint()
    (conf / "x.yaml").write_text("a: 2\n")
    assert code_fingerprint() != before


def test_the_report_names_the_code_versions():
    assert code_lines({"a": "c1", "b": "c1"}) == ["", "Every step ran with code `c1` (a hash of the package, configs "
                                                      "and experiments)."]
    mixed = code_lines({"a": "c1", "b": "c2", "c": "c1"})
    assert "**The steps ran with 2 code versions**" in mixed[1] and "- `c1`: a, c" in mixed and "- `c2`: b" in mixed
    assert code_lines({}) == []
