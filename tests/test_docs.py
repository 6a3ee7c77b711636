"""Every reference the project makes to its own documents resolves inside the repository: ``§N`` sections of
docs/method.md, file paths named in code, notebooks and Markdown, and Markdown links with their anchors."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
SOURCES = sorted(p for d in ("bnext_lib", "benchmarks", "tests", "notebooks", "docs") for p in (ROOT / d).rglob("*")
                 if p.suffix in (".py", ".md", ".ipynb") and ".ipynb_checkpoints" not in p.parts) + [ROOT / "README.md"]
PATH = re.compile(r"(?<![\w/.])((?:bnext_lib|benchmarks|tests|notebooks|docs)/[\w/.-]*\w\.(?:py|md|ipynb|json|cfg))")


def _sections() -> set[str]:
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", METHOD.read_text(), re.M))


def _anchors(md: Path) -> set[str]:
    return set(re.findall(r'<a id="([\w-]+)"></a>', md.read_text()))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_resolve(path):
    text = path.read_text()
    sections = _sections()
    for ref in re.findall(r"§(\d+(?:\.\d+)?)", text):
        assert ref in sections, f"{path.name}: §{ref} is not a section of docs/method.md"
    for ref in PATH.findall(text):
        assert (ROOT / ref).exists(), f"{path.name}: {ref} does not exist"
    if path.suffix == ".md":
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file) if file else path
            assert dest.exists(), f"{path.name}: link to {target} does not resolve"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest) or anchor in _heading_slugs(dest), f"{path.name}: no #{anchor}"


def _heading_slugs(md: Path) -> set[str]:
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", md.read_text(), re.M)}


def test_the_checker_sees_a_broken_reference(tmp_path):
    assert "99" not in _sections()
    missing = "bnext_lib" + "/nonexistent.py"  # split, so that this file's own check does not see it
    assert not (ROOT / missing).exists() and PATH.findall(f"see {missing}") == [missing]
