"""bench/report.py on two tiny synthetic runs written here: one self-contained file (no "http" anywhere, the curves
as an embedded PNG), hostile text escaped, one row per explained example, sorted by the change of agreement, the
"prediction changed" section; bad input is one stderr line and exit code 2. A `browser` test opens the page in
headless Chromium: it renders, logs no console message and makes no network request."""
import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import report  # noqa: E402

HOSTILE = ["<script>alert(1)</script>", "fish", "&", "chips", 'say "hi"', "it's", "http://x.example"]


def example(i: int, words: list[str], scores: list[float], rationale, pred: str, gold: str = "A") -> dict:
    from common import example_plausibility  # the plausibility the scripts write, per example
    p, why = example_plausibility(rationale, scores) if rationale is not None else (None, "no rationale data")
    plaus = None if p is None else {k: p[k] for k in ("ap", "token_f1", "iou_f1")}
    return {"id": f"test-{i}", "index": i, "words": words, "pair_start": None,
            "pieces": [[j + 1] for j in range(len(words))], "gold": gold, "pred": pred, "p_pred": 0.75,
            "correct": pred == gold, "rationale": rationale, "skipped": None if p is not None else why,
            "scores": {"own": scores, "ig": [-s for s in scores]}, "plausibility": {"own": plaus, "ig": None}}


def write_run(d: Path, rows: list[dict], alpha: float, test: float) -> Path:
    d.mkdir(parents=True)
    (d / "explanations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.json").write_text(json.dumps({"task": "ic", "shots": "1", "alpha": alpha, "seed": 55,
                                               "model": "tiny <b>model</b>"}))
    (d / "results.json").write_text(json.dumps({"task": "ic", "setting": "1", "seed": 55, "metric": "accuracy",
                                                "test": test, "plausibility": {"own": "own"}}))
    log = []
    for epoch in range(3):
        log += [{"epoch": epoch, "step": 2 * epoch + k, "L_task": 1.0 / (epoch + 1 + k), "L_int": 0.1 * k, "L": 1.0,
                 "int_on": True, "n_int": 3} for k in range(2)]
        log.append({"epoch": epoch, "int_on": True, "dev": 0.5 + 0.1 * epoch, "best_dev": 0.5 + 0.1 * epoch})
    (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return d


@pytest.fixture()
def runs(tmp_path) -> tuple[Path, Path]:
    r = [1, 0, 1, 0, 0, 0, 0]
    method = [example(0, HOSTILE, [3.0, 0.1, 2.0, 0.2, 0.0, -1.0, 0.0], r, "A"),       # AP 1.0
              example(1, ["play", "some", "jazz"], [0.2, 0.1, 0.9], [0, 0, 1], "B"),    # AP 1.0
              example(2, ["book", "a", "table"], [0.5, 0.2, 0.1], None, "A"),           # no rationale data
              example(3, ["rate", "this", "book"], [0.1, 0.3, 0.2], [1, 0, 0], "A")]    # AP 1/3
    base = [example(0, HOSTILE, [0.0, 2.0, 0.1, 3.0, 0.0, 0.0, 1.0], r, "B"),          # AP 0.27
            example(1, ["play", "some", "jazz"], [0.9, 0.1, 0.2], [0, 0, 1], "B"),      # AP 1/2
            example(2, ["book", "a", "table"], [0.5, 0.2, 0.1], None, "B"),
            example(3, ["rate", "this", "book"], [0.3, 0.2, 0.1], [1, 0, 0], "A")]      # AP 1.0
    return (write_run(tmp_path / "uimer_im" / "ic-1shot-uniform-55", method, 0.6, 0.7),
            write_run(tmp_path / "uimer_im" / "ic-1shot-base-55", base, 0.0, 0.65))


def section(page: str, start: str, end: str | None) -> str:
    a = page.index(f"id={start}>")
    return page[a:page.index(f"id={end}>")] if end else page[a:]


def test_report_is_one_safe_file_with_a_row_per_example(runs, tmp_path):
    run, base = runs
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    assert report.cli([str(run), "--against", str(base), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    page = out.read_text()
    assert "http" not in page.lower()  # no reference to anything, not even in the data's text
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?(data:image/png;base64,|#))""", page)
    assert not re.search(r"url\(|@import|@font-face", page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&amp;" in page and "say &quot;hi&quot;" in page
    assert "it&#x27;s" in page and "tiny &lt;b&gt;model&lt;/b&gt;" in page
    png = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(png) == 1 and base64.b64decode(png[0]).startswith(b"\x89PNG\r\n\x1a\n")
    examples = section(page, "examples", "changed")
    assert examples.count("<div class=ex>") == 4 and examples.count("<span class=tag>baseline</span>") == 4
    # sorted by the |change of AP| of `own`: 0 (+0.73), 3 (-0.67), 1 (+0.5), then 2 (no rationale)
    order = re.findall(r"id test-(\d)", examples)
    assert order == ["0", "3", "1", "2"], order
    changed = section(page, "changed", None)
    assert re.findall(r"id test-(\d)", changed) == ["0", "2"]  # the predictions that differ from the baseline's
    assert "<b>own</b> moved towards the human rationale (higher AP) on <b>2</b>, away on <b>1</b>" in page


def test_report_defaults_and_explainer_choice(runs):
    run, _ = runs
    assert report.cli([str(run)]) == 0  # no baseline: file order, RUN_DIR/report.html, the method's own explainer
    page = (run / "report.html").read_text()
    assert "own (shown below)" in page and re.findall(r"id test-(\d)", page) == ["0", "1", "2", "3"]
    assert report.cli([str(run), "--explainer", "ig", "-o", str(run / "ig.html")]) == 0
    assert "ig (shown below)" in (run / "ig.html").read_text()


def test_report_shows_tag_sequences_and_pairs(tmp_path):
    tags = {**example(0, ["play", "queen", "now"], [0.1, 0.9, 0.0], [0, 1, 0], "x"),
            "gold": ["O", "B-artist", "O"], "pred": ["O", "B-album", "O"], "correct": False}
    pair = {**example(1, ["a", "dog", "runs", "it", "moves"], [0.1, 0.5, 0.2, 0.0, 0.3], [0, 1, 0, 0, 1],
                      "entailment", "entailment"), "pair_start": 3}
    run = write_run(tmp_path / "run", [tags, pair], 0.0, 0.5)
    assert report.cli([str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "tags 2/3 right" in page and page.count('<span class="sep">') == 1
    outlined = re.findall(r'<span class="w[^"]*wrong"[^>]*title="([^"]*)">(\w+)<', page)
    assert outlined == [("own 0.9; human rationale; pred B-album / gold B-artist", "queen")]  # the wrongly tagged word


def bad(tmp_path: Path, runs) -> dict:
    run, base = runs
    other = write_run(tmp_path / "other", [example(9, ["x", "y"], [1.0, 0.0], [1, 0], "A")], 0.0, 0.5)
    broken = write_run(tmp_path / "broken", [example(0, ["x", "y"], [1.0, 0.0], [1, 0], "A")], 0.0, 0.5)
    (broken / "explanations.jsonl").write_text(json.dumps(example(0, ["x", "y"], [1.0, 0.0], [1, 0], "A"))
                                               + "\n{not json\n")
    nan = write_run(tmp_path / "nan", [], 0.0, 0.5)
    (nan / "explanations.jsonl").write_text('{"id": "a", "words": ["x"], "gold": "A", "pred": "A", '
                                            '"rationale": null, "scores": {"ig": [NaN]}}\n')
    short = write_run(tmp_path / "short", [], 0.0, 0.5)
    (short / "explanations.jsonl").write_text(json.dumps({**example(0, ["x", "y"], [1.0, 0.0], [1, 0], "A"),
                                                          "rationale": [1]}) + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    return {
        "missing run dir": ([str(tmp_path / "nope")], "run directory does not exist"),
        "no explanations.jsonl": ([str(empty)], "explanations.jsonl: missing"),
        "malformed line": ([str(broken)], f"{broken / 'explanations.jsonl'}:2: malformed JSON"),
        "NaN": ([str(nan)], f"{nan / 'explanations.jsonl'}:1: malformed JSON"),
        "wrong field": ([str(short)], f"{short / 'explanations.jsonl'}:1: field 'rationale'"),
        "other examples": ([str(run), "--against", str(other)], "the runs explained different examples"),
        "unknown explainer": ([str(run), "--explainer", "lime"], "--explainer lime: the run"),
        "-o in a missing folder": ([str(run), "-o", str(tmp_path / "no" / "r.html")], "does not exist"),
        "-o a folder": ([str(run), "-o", str(tmp_path)], "is a folder"),
        "missing baseline": ([str(run), "--against", str(tmp_path / "nope")], "--against"),
    }


CASES = ["missing run dir", "no explanations.jsonl", "malformed line", "NaN", "wrong field", "other examples",
         "unknown explainer", "-o in a missing folder", "-o a folder", "missing baseline"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, runs, tmp_path, capsys):
    argv, message = bad(tmp_path, runs)[case]
    assert report.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("report.py: error: ") and message in err, err


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--explainer"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------- headless Chromium
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                None)


def open_in_chromium(page: Path, tmp: Path) -> tuple[str, str, list[str]]:
    """(the DOM after loading, chromium's log on stderr, the URLs the PAGE asked the network for). Chromium's own
    background requests (updates, time, accounts) are told apart by their network isolation key: the page's
    requests carry the file:// site."""
    netlog = tmp / "net.json"
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                        f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
                        "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}", "--dump-dom",
                        page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    log, _ = json.JSONDecoder().raw_decode(netlog.read_text())  # the file may lack its last bracket
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requested = [e["params"]["url"] for e in log["events"] if names.get(e["type"]) == "URL_REQUEST_START_JOB"
                 and "file://" in e["params"].get("network_isolation_key", "")
                 and not e["params"]["url"].startswith(("file:", "data:"))]
    return p.stdout, p.stderr, requested


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (Debian: apt-get install chromium)")
def test_report_renders_offline_in_headless_chromium(runs, tmp_path):
    run, base = runs
    out = tmp_path / "report.html"
    assert report.cli([str(run), "--against", str(base), "-o", str(out)]) == 0
    # the check can fail: a page with a remote image and a console message is caught
    trap = tmp_path / "trap.html"
    trap.write_text('<!DOCTYPE html><html><body><img src="' + "ht" + 'tp://192.0.2.1/x.png">'
                    '<script>console.error("boom")</script></body></html>')
    _, err, requested = open_in_chromium(trap, tmp_path / "trap")
    assert requested == ["ht" + "tp://192.0.2.1/x.png"] and ":CONSOLE" in err
    dom, err, requested = open_in_chromium(out, tmp_path / "page")
    assert requested == [] and ":CONSOLE" not in err, err[-2000:]
    assert dom.count('<div class="ex">') == 4 + 2  # every example, and the two whose prediction changed
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script>" not in dom
    assert '<img alt="training curves" src="data:image/png;base64,' in dom
