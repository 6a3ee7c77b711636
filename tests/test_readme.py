"""The README's commands work as written: they are read from README.md, so the documentation cannot drift."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bnext_lib.cli import config_from_args

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    """Every command of README.md's ```bash blocks, continuation lines joined, comments dropped."""
    commands, block, inside = [], "", False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            block += line[:-1] + " " if line.endswith("\\") else line + "\n"
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            commands.append(argv)
    return commands


@pytest.mark.slow
def test_readme_papermill_example_runs(tmp_path):
    """Run as written, at the smoke profile instead of cpu (seconds instead of ~15 minutes) and into tmp_path:
    ``-p`` hands the notebook ``seeds`` as the text ``'[0, 1, 2]'``, which it must read as a list."""
    [argv] = [c for c in readme_commands() if c[0].endswith("papermill")]
    i = argv.index("profile")
    assert argv[i - 1:i + 2] == ["-p", "profile", "cpu"]  # the one change below must still apply
    argv[i + 1] = "smoke"
    out = tmp_path / "out.ipynb"
    argv = [sys.executable, "-m", "papermill", *[str(out) if a == "out.ipynb" else a for a in argv[1:]],
            "-p", "out_dir", str(tmp_path / "study")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "study" / "results" / "03_distillation.json").read_text())
    assert result["seeds"] == [0, 1, 2] and result["profile"] == "smoke"


@pytest.mark.parametrize("argv", [c for c in readme_commands() if c[:3] == [".venv/bin/python", "-m", "bnext_lib.train"]
                                  and "..." not in c], ids=" ".join)
def test_readme_training_commands_are_valid(argv):
    """Each complete training command of the README parses and validates (nothing is trained)."""
    config_from_args(argv[3:]).validate()


def test_readme_report_commands_name_real_notebooks():
    from bnext_lib.report import NOTEBOOKS

    named = [a for c in readme_commands() for a in c if a.endswith(".ipynb") and a != "out.ipynb"]
    only = [c[c.index("--only") + 1] for c in readme_commands() if "--only" in c]
    assert named and only
    assert all((ROOT / a).is_file() for a in named), named
    assert set(only) <= set(NOTEBOOKS), only


def test_the_spelled_out_cpu_recipe_is_the_run_the_cpu_profile_trains():
    """The README's cpu recipe written out flag by flag trains the same run (the same digest) as --profile cpu."""
    from bnext_lib.config import config_hash

    [spelled] = [c for c in readme_commands() if c[:3] == [".venv/bin/python", "-m", "bnext_lib.train"]
                 and "--model" in c and "--compile" in c and "--val-split" in c]
    profile = config_from_args(["--profile", "cpu", "--seed", "0"])
    assert config_hash(config_from_args(spelled[3:])) == config_hash(profile)
