"""Every command shown in README.md, docs/*.md and bench/README.md parses with the parser of the script it runs, so
a renamed or removed flag breaks this test, not the docs. Method scripts, bench/sweep.py, bench/table.py and
data/fetch.py are parsed with their own argparse parsers; other scripts (bench/bench_*.py, shell scripts) must
define every flag the command uses."""
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METHODS = {"uimer_im.py", "uimer_gb.py", "uimer_dm.py", "regex_robust.py", "smat_jax_free.py"}


def commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash)?\n(.*?)```", doc.read_text(), re.S):
            variables = {}
            for line in block.replace("\\\n", " ").splitlines():
                assign = re.fullmatch(r'\s*(\w+)="([^"]*)"\s*', line)
                if assign:  # S="--task imdb ...", used below as $S
                    variables[assign.group(1)] = assign.group(2)
                    continue
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                words = shlex.split(line, comments=True)
                if len(words) >= 2 and words[0] in ("python", "python3", "bash") and words[1] not in ("-m", "-c"):
                    out.append((f"{doc.relative_to(ROOT)}: {line.strip()[:80]}", words[1:]))
    return out


def load(path: Path):
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    return importlib.import_module(path.stem)


CMDS = commands()


def test_the_docs_show_commands():
    assert len(CMDS) > 60 and {Path(w[0]).name for _, w in CMDS} >= METHODS


@pytest.mark.parametrize("where,words", CMDS, ids=[c[0] for c in CMDS])
def test_documented_command_parses(where, words, monkeypatch):
    import common
    import smat_jax_free
    for domain in (common.EXISTING_DIR, smat_jax_free.EXISTING_FILE):  # the docs' paths need not exist here
        monkeypatch.setattr(domain, "ok", lambda x: True)
    script, argv = ROOT / words[0], words[1:]
    assert script.is_file(), f"{where}: no such script {words[0]}"
    if script.name in METHODS:
        mod = load(script)
        mod.parse_args(argv)  # argparse exits (SystemExit 2) on an unknown flag or a value outside its domain
    elif script.name in ("sweep.py", "table.py", "fetch.py"):
        load(script).build_parser().parse_args(argv)
    else:
        source = script.read_text()
        for flag in (w.split("=")[0] for w in argv if w.startswith("--")):
            assert f'"{flag}"' in source or f"{flag})" in source, f"{where}: {script.name} has no flag {flag}"


SECTIONS = ["overview", "usage", "equations -> code", "logged metrics", "deviations", "results", "speed",
            "quick config"]
PAGES = ["uimer.md", "uimer_im.md", "uimer_gb.md", "uimer_dm.md", "smat.md", "regex.md"]


@pytest.mark.parametrize("page", PAGES)
def test_method_page_has_the_sections_in_order(page):
    headings = [h.lower() for h in re.findall(r"^## (.+)$", (ROOT / "docs" / page).read_text(), re.M)]
    found = [next((i for i, h in enumerate(headings) if h.startswith(s)), None) for s in SECTIONS]
    assert None not in found, f"docs/{page}: missing {[s for s, i in zip(SECTIONS, found) if i is None]}"
    assert found == sorted(found), f"docs/{page}: sections out of order: {headings}"


@pytest.mark.parametrize("script", sorted(METHODS))
def test_method_docstring_names_its_page(script):
    doc = load(ROOT / script).__doc__
    page = {"smat_jax_free.py": "smat.md", "regex_robust.py": "regex.md"}.get(script, script.replace(".py", ".md"))
    assert f"docs/{page}" in doc, f"{script}: the docstring does not name docs/{page}"
