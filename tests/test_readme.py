"""The README as a reader meets it: its quick start is what the Makefile and the configs support,
every relative link in it and in docs/ leads to a file, and it stays short. Nothing here runs the
study: tests/study/test_study.py runs the README's own study line (read from the README)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 260
# The only places outside the repository the README may send a reader: the paper and DRIVE's page.
ALLOWED_EXTERNAL = ("https://arxiv.org/abs/1709.01872", "https://drive.grand-challenge.org/")


def fenced_blocks(text: str) -> list[tuple[int, str]]:
    """(start offset, body) of every ``` fenced block."""
    return [(m.start(), m.group(1)) for m in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)]


def quick_start_commands(readme: str | None = None) -> list[str]:
    """The commands of the first fenced block under the README's "## Quick start" heading,
    without trailing `# comments`."""
    text = README.read_text() if readme is None else readme
    heading = re.search(r"^## Quick start\s*$", text, re.M)
    assert heading, "README.md has no '## Quick start' heading"
    following = [body for start, body in fenced_blocks(text) if start > heading.end()]
    assert following, "no fenced block under '## Quick start'"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in following[0].splitlines()]
    return [line for line in lines if line]


def makefile() -> tuple[set[str], dict[str, str]]:
    """The Makefile's targets and its `VAR ?= default` variables."""
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))
    variables = {name: value.strip() for name, value in re.findall(r"^([A-Z_]+)\s*\?=[ \t]*(.*)$", text, re.M)}
    return targets, variables


def make_call(command: str) -> tuple[str, dict[str, str]]:
    """`make <target> VAR=value ...` -> (target, {VAR: value}), checked against the Makefile."""
    words = shlex.split(command)
    assert words[0] == "make", command
    targets, variables = makefile()
    goals = [w for w in words[1:] if "=" not in w]
    assignments = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    assert len(goals) == 1 and goals[0] in targets, f"{command!r}: no such make target (have {sorted(targets)})"
    unknown = set(assignments) - set(variables)
    assert not unknown, f"{command!r}: the Makefile has no variable {sorted(unknown)}"
    return goals[0], assignments


def config_name(group: str, option: str) -> str:
    path = ROOT / "conf" / group / f"{option}.yaml"
    assert path.is_file(), f"{group}={option}: no {path.relative_to(ROOT)}"
    return yaml.safe_load(path.read_text())["name"]


def study_out_dir(data: str, profile: str) -> str:
    """conf/stage/study.yaml's default `study.out_dir`, resolved for data=<data> profile=<profile>."""
    template = yaml.safe_load((ROOT / "conf" / "stage" / "study.yaml").read_text())["study"]["out_dir"]
    names = {"data.name": config_name("data", data), "profile.name": config_name("profile", profile)}
    resolved = re.sub(r"\$\{([\w.]+)\}", lambda m: names[m.group(1)], template)
    assert "$" not in resolved, template
    return resolved


def test_quick_start_is_install_the_phantom_study_and_its_report():
    commands = quick_start_commands()
    assert len(commands) == 3, commands
    install, study, report = commands

    assert make_call(install) == ("install", {})

    target, assignments = make_call(study)
    assert target == "reproduce-paper"
    # No data to download: the built-in phantom, at the smoke budget.
    assert assignments.get("DATA") == "phantom" and assignments.get("PROFILE") == "smoke", study
    assert "OUT" not in assignments, "the quick start relies on the default output folder"
    _, defaults = makefile()
    assert defaults["OUT"] == "", "with OUT set by default the report would not be where the README says"
    recipe = (ROOT / "Makefile").read_text().split("\nreproduce-paper:", 1)[1].split("\n\n", 1)[0]
    assert "stage=study" in recipe and "data=$(DATA)" in recipe and "profile=$(PROFILE)" in recipe

    # The third line opens the report where the study writes it (relative to the repository root).
    words = shlex.split(report)
    assert len(words) == 2 and words[0] in {"less", "cat", "more", "open", "xdg-open"}, report
    expected = study_out_dir(assignments["DATA"], assignments["PROFILE"]) + "/report.md"
    assert words[1] == expected, f"the study writes {expected}, the README says {words[1]}"


def test_quick_start_parser_reads_only_the_block_under_its_heading():
    text = "# T\n\n```bash\nmake nope\n```\n\n## Quick start\n\nText.\n\n```bash\nmake install   # a comment\n\nmake test\n```\n"
    assert quick_start_commands(text) == ["make install", "make test"]


def test_the_readme_keeps_the_ci_test_command():
    """.ci/run runs `make test`, "the README's test command": the README must show that line."""
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in [line.strip() for line in README.read_text().splitlines()]


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; keep it at most {MAX_README_LINES} (move detail to docs/)"


def test_make_targets_stages_and_experiments_named_in_the_readme_exist():
    text = README.read_text()
    targets, _ = makefile()
    for target in re.findall(r"\bmake ([a-z][\w-]*)", text):
        assert target in targets, f"README names `make {target}`, which the Makefile does not have"
    for stage in set(re.findall(r"\bstage=([a-z_]+)", text)):
        assert (ROOT / "conf" / "stage" / f"{stage}.yaml").is_file(), f"README names stage={stage}"
    for experiment in set(re.findall(r"\bexperiment=([a-z_0-9]+)", text)):
        assert (ROOT / "experiments" / f"{experiment}.yaml").is_file(), f"README names experiment={experiment}"
    for group, option in set(re.findall(r"\b(data|profile|trainer|logger|privacy)=([a-z_]+)\b", text)):
        assert (ROOT / "conf" / group / f"{option}.yaml").is_file(), f"README names {group}={option}"


def _links(path: Path) -> list[str]:
    """Markdown link and image targets outside fenced blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text) + re.findall(r"<(https?://[^>]+)>", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    heading = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


MARKDOWN = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target} (no {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading '#{anchor}' in {resolved.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_the_readme_points_outside_the_repository_only_to_the_paper_and_drive():
    external = [t for t in _links(README) if re.match(r"https?://", t)]
    assert external and all(t in ALLOWED_EXTERNAL for t in external), external


def test_license_and_citation_match_the_package():
    pyproject = (ROOT / "pyproject.toml").read_text()
    license_name = re.search(r'^license\s*=\s*\{\s*text\s*=\s*"([^"]+)"', pyproject, re.M).group(1)
    version = re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.M).group(1)
    assert (ROOT / "LICENSE").read_text().startswith(f"{license_name} License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["license"] == license_name and str(citation["version"]) == version
    assert citation["cff-version"] and citation["title"] and citation["authors"]
    assert any("1709.01872" in str(ref) for ref in citation["references"])
    assert "arXiv:1709.01872" in README.read_text()
