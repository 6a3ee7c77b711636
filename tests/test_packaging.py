"""The two set-up routes agree, and the README leads with the two commands."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    conda_pip = [line.strip()[2:] for line in lines[start + 1:] if line.strip().startswith("- ")]
    conda_pip = [d for d in conda_pip if not d.startswith("-e")]
    assert sorted(conda_pip) == sorted(deps)
    assert len({_name(d) for d in deps}) == len(deps)


def test_dependency_ranges_admit_the_pinned_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in project["dependencies"] if _name(d) == "torch")
    tv_req = next(d for d in project["dependencies"] if _name(d) == "torchvision")
    from packaging.specifiers import SpecifierSet
    assert "2.14.1" in SpecifierSet(torch_req[len("torch"):])
    assert "0.29.1" in SpecifierSet(tv_req[len("torchvision"):])


def test_readme_gives_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    assert "make report" in first_block and "make test" in first_block
    assert "make test" in (ROOT / ".ci" / "run").read_text()
