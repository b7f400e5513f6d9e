"""The shape of the repository: each method file stands alone with common.py, and common.py holds only what more than
one method file uses (outside its UIMER section)."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD_FILES = ["uimer_im.py", "uimer_gb.py", "uimer_dm.py", "regex_robust.py", "smat_jax_free.py"]
UIMER_FILES = METHOD_FILES[:3]


@pytest.mark.slow
@pytest.mark.parametrize("name", METHOD_FILES + ["common.py"])
def test_method_files_import_only_stdlib_third_party_and_common(name):
    tree = ast.parse((ROOT / name).read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    own = {Path(f).stem for f in METHOD_FILES} - {Path(name).stem}
    assert not (mods & own), f"{name} imports another method file: {mods & own}"


def common_names() -> dict[str, tuple[str, set[str]]]:
    """Top-level name of common.py -> (the section (banner title) it is defined in, the common names it uses)."""
    text = (ROOT / "common.py").read_text()
    banners = [(m.start(), m.group(1)) for m in re.finditer(r"^# =+\n# (.+)\n# =+$", text, re.M)]
    nodes = {}
    for node in ast.parse(text).body:
        names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
            [t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
        offset = sum(len(line) + 1 for line in text.splitlines()[:node.lineno - 1])
        section = next((title for pos, title in reversed(banners) if pos <= offset), "header")
        refs = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        nodes.update({n: (section, refs) for n in names})
    return {n: (section, refs & set(nodes) - {n}) for n, (section, refs) in nodes.items()}


USER_API = {"load_task_model"}  # the one-function loader of what save_task_model writes (every UIMER file and REGEX)


def test_common_holds_only_what_more_than_one_method_file_uses():
    """A public name of common.py outside the UIMER section is used, directly or through other helpers of common,
    by no method file or by at least two; the UIMER section is used by the three UIMER files only."""
    names = common_names()
    users = {}
    for f in METHOD_FILES:  # what each method file uses, closed over common's own helpers
        todo = set(re.findall(r"\bcommon\.(\w+)", (ROOT / f).read_text())) & set(names)
        seen = set()
        while todo:
            n = todo.pop()
            seen.add(n)
            todo |= names[n][1] - seen
        for n in seen:
            users.setdefault(n, set()).add(f)
    for name, (section, _) in names.items():
        by = sorted(users.get(name, ()))
        if section.startswith("UIMER"):
            assert set(by) <= set(UIMER_FILES), f"{name} (UIMER section) is used by {by}"
        elif not name.startswith("_") and name not in USER_API:
            assert len(by) != 1, f"common.{name} is used by {by[0]} alone: move it into that file"
    assert any(section.startswith("UIMER") for section, _ in names.values())


@pytest.mark.slow
def test_importing_common_changes_no_environment_or_global_setting():
    code = ("import os, torch; before = dict(os.environ); det = torch.are_deterministic_algorithms_enabled(); "
            "import common; assert dict(os.environ) == before and torch.are_deterministic_algorithms_enabled() == det")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.fixture(scope="module")
def tiny_worlds(tmp_path_factory):
    from conftest import write_tiny_esnli, write_tiny_snips
    from test_regex import write_tiny_text_data
    from test_smat import write_tiny_imdb
    d = tmp_path_factory.mktemp("copy-out-data")
    write_tiny_snips(d)
    write_tiny_esnli(d)
    write_tiny_text_data(d)
    write_tiny_imdb(d)
    return d


def without_section(text: str, title: str) -> str:
    """common.py's text with the banner section whose title starts with `title` removed (up to the next banner)."""
    banner = r"^# =+\n# (.+)\n# =+$"
    starts = [(m.start(), m.group(1)) for m in re.finditer(banner, text, re.M)]
    for i, (pos, name) in enumerate(starts):
        if name.startswith(title):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            return text[:pos] + text[end:]
    raise AssertionError(f"common.py has no section {title!r}")


COPY_OUT = {  # one tiny end-to-end run per method file, and the results.json it must write
    "uimer_im.py": (["--task", "ic", "--shots", "1", "--max-epochs", "1"], "uimer_im/ic-1shot-uniform-55"),
    "uimer_gb.py": (["--task", "ic", "--shots", "1", "--max-epochs", "1"], "uimer_gb/ic-1shot-ghaeini-55"),
    "uimer_dm.py": (["--task", "ic", "--shots", "1", "--max-epochs", "1", "--warmup-epochs", "1",
                     "--extractor-epochs", "1"], "uimer_dm/ic-1shot-onepass-55"),
    "regex_robust.py": (["--task", "sst2", "--max-epochs", "1", "--ig-steps", "2", "--attributions", "random,ig",
                         "--no-randomization", "--igr", "--egt"], "regex_robust/sst2-full-regex-1"),
    "smat_jax_free.py": (["--setup", "teacher", "--task", "imdb", "--max-epochs", "1", "--max-len", "16",
                          "--imdb-split-sizes", "40,10,20"], "smat_jax_free/imdb-teacher"),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", METHOD_FILES)
def test_each_method_file_runs_when_copied_alone_with_common(script, tmp_path, tiny_model, tiny_worlds):
    """The method file and common.py, copied into an empty folder, run end to end from another working directory.
    For a method that does not use the UIMER section, common.py is copied without it (docs/design.md says a copier
    may drop it): the rest of common.py never needs it."""
    dst = tmp_path / "elsewhere"
    dst.mkdir()
    shutil.copy(ROOT / script, dst / script)
    common_py = (ROOT / "common.py").read_text()
    if "uimer" not in declared_sections(script):
        common_py = without_section(common_py, "UIMER")
        assert "def load_uimer_task" not in common_py
    (dst / "common.py").write_text(common_py)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATA_DIR")}
    argv, run = COPY_OUT[script]
    p = subprocess.run([sys.executable, str(dst / script), *argv, "--model", tiny_model, "--data-dir", str(tiny_worlds),
                        "--device", "cpu"], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((cwd / "runs" / run / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the default device is CUDA here")
@pytest.mark.parametrize("script", METHOD_FILES)
def test_default_device_and_cpu_give_the_same_results_json_bytes(script, tmp_path, tiny_model, tiny_worlds):
    """On a CPU-only machine `--device auto` (the default) is the CPU, to the byte."""
    argv, run = COPY_OUT[script]
    got = []
    for device in ([], ["--device", "cpu"]):
        out = tmp_path / ("cpu" if device else "default")
        p = subprocess.run([sys.executable, str(ROOT / script), *argv, "--model", tiny_model, "--data-dir",
                            str(tiny_worlds), "--out-dir", str(out), *device], capture_output=True, text=True,
                           timeout=600, env={k: v for k, v in os.environ.items() if k != "DATA_DIR"})
        assert p.returncode == 0, p.stderr[-3000:]
        got.append((out / run / "results.json").read_bytes())
    assert got[0] == got[1]


def common_sections() -> dict[str, str]:
    """Top-level name of common.py -> the short title of its section (the banner title before any ':')."""
    return {name: section.split(":")[0].strip().lower() for name, (section, _) in common_names().items()}


def declared_sections(script: str) -> list[str]:
    """The sections a method file's docstring says it uses: the line `common.py sections used: A; B; ...`."""
    doc = ast.get_docstring(ast.parse((ROOT / script).read_text()))
    m = re.search(r"common\.py sections used:\s*(.+?)\.?\s*(?:\n\s*\n|\Z)", doc, re.S)
    assert m, f"{script}: the docstring has no line 'common.py sections used: ...'"
    return [s.strip().lower() for s in " ".join(m.group(1).split()).rstrip(".").split(";")]


@pytest.mark.parametrize("script", METHOD_FILES)
def test_docstring_lists_exactly_the_common_sections_the_file_uses(script):
    """The docstring's list of common.py sections equals the sections of the common.py names the file calls
    (`common.NAME` anywhere in it), so a copier knows which parts of common.py to read and the list cannot go
    stale."""
    sections = common_sections()
    used = set(re.findall(r"\bcommon\.(\w+)", (ROOT / script).read_text())) & set(sections)
    want = {sections[n] for n in used}
    got = declared_sections(script)
    assert len(got) == len(set(got)), f"{script}: a section is listed twice: {got}"
    assert set(got) == want, f"{script}: the docstring lists {sorted(got)}, the file uses {sorted(want)}"
    order = list(dict.fromkeys(sections.values()))
    assert got == sorted(got, key=order.index), f"{script}: list the sections in common.py's order: {order}"


def args_class(script: str) -> ast.ClassDef:
    tree = ast.parse((ROOT / script).read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Args")


@pytest.mark.parametrize("script", METHOD_FILES)
def test_every_flag_a_script_accepts_is_declared_in_its_own_args(script, capsys):
    """The flags the script's parser accepts (read from its --help) are exactly the fields of the `Args` class
    written in the file itself (no base class: nothing inherited from common.py or elsewhere), each with a help."""
    import importlib
    cls = args_class(script)
    assert not cls.bases, f"{script}: Args inherits from {[ast.unparse(b) for b in cls.bases]}"
    own = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    with pytest.raises(SystemExit):
        importlib.import_module(script[:-3]).parse_args(["--help"])
    help_text = capsys.readouterr().out
    options = [line.strip().split("  ")[0] for line in help_text.splitlines() if line.lstrip().startswith("--")]
    accepted = {f[2:].replace("-", "_") for line in options for f in re.findall(r"--[a-z][\w-]*", line)}
    aliases = set()
    for n in cls.body:
        if isinstance(n, ast.AnnAssign):
            kw = {k.arg: k.value for k in n.value.keywords} if isinstance(n.value, ast.Call) else {}
            assert "help" in kw, f"{script}: --{n.target.id.replace('_', '-')} has no help"
            if "aliases" in kw:  # other spellings, declared on the field itself
                aliases |= {a[2:].replace("-", "_") for a in ast.literal_eval(kw["aliases"])}
    accepted -= {"help"} | {f"no_{n}" for n in own | aliases} | aliases
    assert accepted == own, f"{script}: accepted but not in its Args: {sorted(accepted - own)}; " \
                            f"in Args but not accepted: {sorted(own - accepted)}"


@pytest.mark.parametrize("script", ["uimer_im.py", "uimer_gb.py", "uimer_dm.py", "smat_jax_free.py",
                                    "regex_robust.py"])
def test_the_data_flags_pasted_in_each_args_match_common(script):
    """Each method's Args declares the your-own-data flags itself (a file's flags live in its Args), pasted from
    common.RationaleDataArgs: the same names, defaults, domains and choices, so the copies cannot drift apart (help
    texts may differ)."""
    import dataclasses
    import importlib

    import common
    want = {f.name: f for f in dataclasses.fields(common.RationaleDataArgs)}
    got = {f.name: f for f in dataclasses.fields(importlib.import_module(script[:-3]).Args) if f.name in want}
    assert got, f"{script}: takes none of the your-own-data flags"
    no_tagging = script in ("smat_jax_free.py", "regex_robust.py")  # sentence classifiers: no tags column
    missing = set(want) - set(got) - ({"tags_column"} if no_tagging else set())
    assert not missing, f"{script}: lacks {sorted(missing)}"
    for name, f in got.items():
        w = want[name]
        assert f.default == w.default, (script, name, f.default, w.default)
        assert (f.metadata.get("choices") or None) == (w.metadata.get("choices") or None), (script, name)
        dom, wdom = f.metadata.get("domain"), w.metadata.get("domain")
        assert (dom and dom.text) == (wdom and wdom.text), (script, name)
