"""Every command shown in README.md, docs/*.md and bench/README.md parses with the parser of the script it runs, so
a renamed or removed flag breaks this test, not the docs. Method scripts, bench/sweep.py, bench/table.py and
data/fetch.py are parsed with their own argparse parsers; other scripts (bench/bench_*.py, shell scripts) must
define every flag the command uses. The method pages have their sections in order and the docstrings name them;
every relative link and #anchor of these pages resolves, and every repository file they mention exists."""
import fnmatch
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METHODS = {"uimer_im.py", "uimer_gb.py", "uimer_dm.py", "regex_robust.py", "smat_jax_free.py"}


def shell_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks tagged bash (or untagged): a fence line opens a block, the next fence
    line closes it, so a ```python or ```json block is skipped whole and never read as shell."""
    blocks, body, lang = [], None, None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if body is None:
                body, lang = [], line.strip()[3:].strip()
            else:
                if lang in ("", "bash", "sh"):
                    blocks.append("\n".join(body) + "\n")
                body = None
        elif body is not None:
            body.append(line)
    return blocks


def commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in DOCS:
        for block in shell_blocks(doc.read_text()):
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
    assert None not in found, f"docs/{page}: missing {[s for s, i in zip(SECTIONS, found, strict=True) if i is None]}"
    assert found == sorted(found), f"docs/{page}: sections out of order: {headings}"


@pytest.mark.parametrize("script", sorted(METHODS))
def test_method_docstring_names_its_page(script):
    doc = load(ROOT / script).__doc__
    page = {"smat_jax_free.py": "smat.md", "regex_robust.py": "regex.md"}.get(script, script.replace(".py", ".md"))
    assert f"docs/{page}" in doc, f"{script}: the docstring does not name docs/{page}"


# ---------------------------------------------------------------------------------------------- links and file mentions
SKIP_DIRS = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}  # tools, runs
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def repository_paths() -> set[str]:
    """Every file and folder of the repository (relative POSIX paths), without what tools and runs create."""
    out = set()
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if not SKIP_DIRS & set(rel.parts):
            out.add(rel.as_posix())
    return out


REPO = repository_paths()
TOP_DIRS = {p for p in REPO if "/" not in p and (ROOT / p).is_dir()}  # bench, data, docs, tests, .ci


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its rendered text (code and emphasis marks and link targets dropped),
    lower-cased, every character that is not a letter, digit, '_', '-' or space removed, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, duplicates numbered -1, -2, ... as GitHub does."""
    seen, out = {}, set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", page.read_text()), re.M):
        slug = github_anchor(heading)
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def links(page: Path) -> list[str]:
    """Targets of the page's Markdown links [text](target), outside code (fences and `spans`)."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_relative_link_and_anchor_resolves(page):
    """A relative link names an existing file or folder of the repository (relative to the page), and a #anchor a
    heading of the page it points at (as GitHub renders it). Links with a scheme (https:, mailto:) are not checked."""
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or ROOT not in (dest, *dest.parents):
            bad.append(f"{target} (no such file)")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            bad.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not bad, f"{page.relative_to(ROOT)}: {bad}"


def expand_braces(token: str) -> list[str]:
    """`imdb_{train,test}.jsonl` -> [imdb_train.jsonl, imdb_test.jsonl] (shell brace expansion, nested too)."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", token)
    if not m:
        return [token]
    return [x for part in m.group(1).split(",") for x in expand_braces(token[:m.start()] + part + token[m.end():])]


def exists(pattern: str) -> bool:
    """A repository path (a trailing '/' = a folder), or a glob that matches one."""
    folder, pattern = pattern.endswith("/"), pattern.rstrip("/")
    hits = [p for p in REPO if fnmatch.fnmatchcase(p, pattern)] if any(c in pattern for c in "*?[") else \
        [pattern] if pattern in REPO else []
    return any((ROOT / p).is_dir() for p in hits) if folder else bool(hits)


# Bare file names (no folder) are checked by their kind: source, configuration and documentation files, what a
# repository holds. Data and result files (.json, .jsonl, .csv, .pt, .png, ...) are what runs write and are not.
CHECKED_SUFFIXES = (".py", ".sh", ".md", ".txt", ".toml", ".ini")
NOT_REPOSITORY_FILES = {
    "model_card.md": "written by --save-model into a run's model/ folder",
    "bootstrap_eval.py": "a file of the original SMaT code (coderpat/learning-scaffold), named as such",
}


def mentioned_files(page: Path) -> list[str]:
    """Tokens of the page (prose, code spans and command blocks alike) that name a repository file."""
    out = []
    for token in re.split(r"[\s`'\"()\[\]|]+", page.read_text()):
        token = token.strip(".,;:")
        if not token or "<" in token or ">" in token or "://" in token:  # placeholders (<run>/model/), URLs
            continue
        first = token.split("/")[0]
        if "/" in token and first in TOP_DIRS:
            out.append(token)
        elif "/" not in token and (token.endswith(CHECKED_SUFFIXES) or token in REPO):
            out.append(token)
    return out


def shipped_dataset(path: str) -> bool:
    """False for data/<dataset>/... where <dataset> is one the readers know (common.DATA_LAYOUTS) but the repository
    does not ship: where data/fetch.py or the user puts it, not a repository file."""
    import common
    parts = path.split("/")
    return not (parts[0] == "data" and len(parts) > 1 and parts[1] in common.DATA_LAYOUTS and f"data/{parts[1]}"
                not in REPO)


@pytest.mark.parametrize("page", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_mentioned_repository_file_exists(page):
    """What counts as a mention of a repository file:
    - a path that starts with one of the repository's top-level folders (`bench/sweep.py`, `docs/x.md`,
      `tests/fixtures/...`, `data/...`, `.ci/run`), globs (`bench/bench_*.py`) and shell braces
      (`{train,test}`) expanded, a trailing '/' meaning a folder; `tests/x.py::test_name` also names a test that
      must be defined in that file;
    - a bare file name of a source, configuration or documentation kind (CHECKED_SUFFIXES) or the name of a
      top-level file (`common.py`, `requirements.txt`, `bench_*.py`): some file of the repository must have it.
    Not mentions of repository files: what runs and tools create (paths under `runs/`, `.venv/`, result files such
    as `results.json` or `summary.json`, placeholders with <...>), datasets that data/fetch.py or the user puts
    under data/ (shipped_dataset), URLs, other repositories' paths (their first folder is not one of ours), and
    the names in NOT_REPOSITORY_FILES."""
    missing = []
    for token in mentioned_files(page):
        path, _, test = token.split("#")[0].partition("::")  # a link's #anchor is checked above
        if path in NOT_REPOSITORY_FILES or not shipped_dataset(path):
            continue
        for p in expand_braces(path):
            if "/" in p and not exists(p):
                missing.append(token)
            elif "/" not in p and not any(fnmatch.fnmatchcase(q.split("/")[-1], p) for q in REPO):
                missing.append(token)
            elif test and not re.search(rf"^def {re.escape(test)}\(", (ROOT / p).read_text(), re.M):
                missing.append(f"{token} (no such test)")
    assert not missing, f"{page.relative_to(ROOT)} mentions files that are not in the repository: {missing}"


def test_readme_stays_an_entry_page():
    """README.md is the short entry page (at most 250 lines); details go to docs/ and bench/README.md."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
