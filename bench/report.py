"""One self-contained HTML page of a run's explanations, optionally beside a baseline run.

Reads RUN_DIR/explanations.jsonl (written by the method scripts with --explain-examples N), config.json,
results.json and log.jsonl, and writes ONE HTML file: inline CSS, the training curves as a PNG data URI, no script,
font, style sheet or image from anywhere else (it opens offline, and the string "http" occurs nowhere in it). It
shows:

- a header: the run's method, data, seed and test metric, and the plausibility of each explainer against the human
  rationale (token average precision, token F1 and IOU F1, means over the examples that have a usable rationale),
  beside the baseline's with --against;
- the training curves from log.jsonl: the loss terms (mean over each epoch's steps) and the dev metric per epoch;
- one row per explained example: the words coloured by the explainer's attribution (one diverging scale, each row
  scaled by its own largest |score|), the human rationale underlined, prediction vs gold; with --against the
  baseline's row under it (matched by example id), the examples sorted by the largest change in the explainer's
  agreement with the rationale (per-example average precision), and a second section holding only the examples
  whose prediction changed (an anchor at the top leads to it: a filter that needs no script and works in any
  viewer, printed too).

Every text from the data is HTML-escaped. docs/report.md says how to read a report and defines every number.

Usage:
    python bench/report.py runs/uimer_im/ic-1shot-uniform-55 --against runs/uimer_im/ic-1shot-base-55 -o report.html
    python bench/report.py runs/uimer_im/ic-1shot-uniform-55 --explainer ig     # -> RUN_DIR/report.html
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from toolbox import OneLineParser, UsageError, run_cli  # noqa: E402

NEGATIVE, POSITIVE = (33, 102, 172), (178, 24, 43)  # the two ends of the diverging scale (blue, red); 0 is white
METRICS = (("ap", "token AP"), ("token_f1", "token F1"), ("iou_f1", "IOU F1"))
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:72em;color:#222;
line-height:1.45;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
nav a{margin-right:1em}
.ex{border-top:1px solid #e4e4e4;padding:.5em 0}
.meta{font-size:.85em;color:#555}
.line{margin:.2em 0}
.tag{display:inline-block;width:4.6em;font-size:.75em;color:#777}
.w{padding:.05em .15em;margin:0 .05em;border-radius:.2em}
.r{text-decoration:underline;text-decoration-thickness:.15em;text-underline-offset:.2em}
.cut{color:#aaa}
.sep{color:#999;margin:0 .4em}
.ok{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.up{color:#1a7f37}.down{color:#c62828}
.bar{display:inline-block;width:14em;height:.9em;vertical-align:middle;border:1px solid #ccc;
background:linear-gradient(to right,rgb(33,102,172),rgb(255,255,255),rgb(178,24,43))}
.legend{font-size:.85em}
.wrong{outline:1px dashed #c62828}
"""


# ------------------------------------------------------------------------------------------------------
# Reading a run: strict JSON, every field of explanations.jsonl checked, `file:line` on any error
# ------------------------------------------------------------------------------------------------------
def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_json(path: Path) -> dict | None:
    """A JSON object, None if the file is absent; malformed JSON is a one-line UsageError naming the file."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: malformed JSON ({str(e).split(':')[0]})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line; a malformed line is `file:line: what`."""
    out = []
    lines = []
    for i, raw in enumerate(path.read_bytes().split(b"\n"), 1):  # lines end at \n only (not U+2028 and friends)
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise UsageError(f"{path}:{i}: not valid UTF-8 (byte {e.start} of the line)") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except ValueError as e:
            raise UsageError(f"{path}:{i}: malformed JSON ({str(e).split(':')[0]})") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        out.append((i, obj))
    return out


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _label(x) -> bool:
    return isinstance(x, (str, int)) and not isinstance(x, bool) or \
        isinstance(x, list) and all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in x)


def check_row(row: dict, where: str) -> None:
    """The fields of one explanations.jsonl line (docs/report.md), or a UsageError `where: field ...`."""
    def need(ok: bool, field: str, what: str):
        if not ok:
            raise UsageError(f"{where}: field {field!r} must be {what}, got {row.get(field)!r:.80}")
    words = row.get("words")
    need(isinstance(row.get("id"), str), "id", "a string")
    need(isinstance(words, list) and len(words) > 0 and all(isinstance(w, str) for w in words), "words",
         "a non-empty list of strings")
    n = len(words)
    need(_label(row.get("gold")), "gold", "a label or a list of labels")
    need(_label(row.get("pred")), "pred", "a label or a list of labels")
    need(row.get("p_pred") is None or _number(row["p_pred"]), "p_pred", "a number or null")
    need(row.get("pair_start") is None or isinstance(row["pair_start"], int) and not isinstance(row["pair_start"], bool)
         and 0 < row["pair_start"] < n, "pair_start", f"null or an integer in [1, {n - 1}]")
    r = row.get("rationale")
    need(r is None or isinstance(r, list) and len(r) == n and all(v in (0, 1, None) and not isinstance(v, bool)
                                                                   for v in r),
         "rationale", f"null or a list of {n} values 0, 1 or null (one per word)")
    scores = row.get("scores")
    need(isinstance(scores, dict) and len(scores) > 0, "scores", "an object: explainer -> per-word scores")
    for name, s in scores.items():
        if s is not None and not (isinstance(s, list) and len(s) == n and all(v is None or _number(v) for v in s)):
            raise UsageError(f"{where}: scores of {name!r} must be null or a list of {n} finite numbers or null "
                             "(one per word)")
    plaus = row.get("plausibility", {})
    need(isinstance(plaus, dict), "plausibility", "an object: explainer -> {ap, token_f1, iou_f1} or null")
    for name, p in plaus.items():
        if p is not None and not (isinstance(p, dict) and all(p.get(k) is None or _number(p.get(k))
                                                              for k, _ in METRICS)):
            raise UsageError(f"{where}: plausibility of {name!r} must be null or an object of numbers")


def read_run(run_dir: str, flag: str) -> dict:
    """Everything the page shows of one run directory."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UsageError(f"{flag} {run_dir}: run directory does not exist")
    path = d / "explanations.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: missing; the run wrote no explanations (run the method with --explain-examples N, "
                         "N > 0)")
    rows, seen = [], {}
    for line, row in read_jsonl(path):
        check_row(row, f"{path}:{line}")
        if row["id"] in seen:
            raise UsageError(f"{path}:{line}: example id {row['id']!r} already on line {seen[row['id']]}")
        seen[row["id"]] = line
        rows.append(row)
    if not rows:
        raise UsageError(f"{path}: no explained examples")
    log = d / "log.jsonl"
    return {"dir": d, "rows": rows, "config": read_json(d / "config.json") or {},
            "results": read_json(d / "results.json") or {}, "log": read_jsonl(log) if log.is_file() else None}


def explainers_of(run: dict) -> list[str]:
    names: dict[str, None] = {}
    for row in run["rows"]:
        names.update(dict.fromkeys(row["scores"]))
    return list(names)


def default_explainer(run: dict) -> str:
    """The method's own explainer (results.json's plausibility.own), else integrated gradients, else the first."""
    names = explainers_of(run)
    own = (run["results"].get("plausibility") or {}).get("own") if isinstance(run["results"].get("plausibility"),
                                                                              dict) else None
    return own if own in names else "ig" if "ig" in names else names[0]


def check_same_examples(run: dict, base: dict) -> None:
    """Both runs explained the same examples (ids) with the same words, or a one-line UsageError."""
    a, b = {r["id"]: r for r in run["rows"]}, {r["id"]: r for r in base["rows"]}
    for x, y, xd, yd in ((a, b, run["dir"], base["dir"]), (b, a, base["dir"], run["dir"])):
        missing = [i for i in x if i not in y]
        if missing:
            raise UsageError(f"the runs explained different examples: {len(missing)} of the {len(x)} example ids of "
                             f"{xd} are not in {yd} (first: {missing[0]!r}); compare runs of the same data and "
                             "--explain-examples")
    for i, r in a.items():
        if r["words"] != b[i]["words"]:
            raise UsageError(f"example {i!r} has different words in {run['dir']} and {base['dir']}: not the same data")


# ------------------------------------------------------------------------------------------------------
# Training curves: log.jsonl -> one PNG (matplotlib, Agg)
# ------------------------------------------------------------------------------------------------------
SKIP_KEYS = {"epoch", "step", "round", "lr"}


def epochs_of(log: list[tuple[int, dict]]) -> list[dict]:
    """Per epoch record of the log (a record with `epoch` and no `step`), in log order: its numbers (the dev metric)
    and the mean of each number of the step records before it (the loss terms: L_task, L_int, L, ...). Counters
    (n_*), flags and `lr` are left out."""
    out, steps = [], {}
    for _, rec in log:
        nums = {k: v for k, v in rec.items() if _number(v) and k not in SKIP_KEYS and not k.startswith("n_")}
        if "step" in rec:
            for k, v in nums.items():
                steps.setdefault(k, []).append(v)
        elif "epoch" in rec:
            out.append({"epoch": nums, "steps": {k: sum(v) / len(v) for k, v in steps.items()}})
            steps = {}
    return out


def curves_png(series: list[tuple[str, list[dict]]]) -> bytes | None:
    """Two panels: loss terms (mean per epoch) and the epoch-level numbers (dev metric); runs as solid lines, the
    baseline dashed. None when no log has an epoch record."""
    if not any(epochs for _, epochs in series):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for panel, ax, title in (("steps", axes[0], "loss terms (mean over the epoch's steps)"),
                             ("epoch", axes[1], "per epoch (dev metric)")):
        keys = []
        for _, epochs in series:
            for e in epochs:
                keys += [k for k in e[panel] if k not in keys]
        for i, key in enumerate(keys):
            for (label, epochs), style in zip(series, ("-", "--"), strict=False):
                xs = [j + 1 for j, e in enumerate(epochs) if key in e[panel]]
                ys = [e[panel][key] for e in epochs if key in e[panel]]
                if xs:
                    ax.plot(xs, ys, style, color=colours[i % len(colours)], marker="." if len(xs) < 40 else None,
                            label=f"{key} ({label})" if len(series) > 1 else key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (in log order)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if keys:
            ax.legend(fontsize=7)
    fig.tight_layout()
    png = None
    for dpi in range(80, 100):  # a dpi whose base64 text happens to hold no "http" (the page must hold none)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        png = buf.getvalue()
        if "http" not in base64.b64encode(png).decode().lower():
            break
    plt.close(fig)
    return png


# ------------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------------
def esc(x) -> str:
    """HTML-escaped text (quotes too); an `h` that starts "http" becomes a character reference, so that the page
    holds the string nowhere even when the data does (it still reads the same)."""
    return re.sub(r"[hH](?=[tT][tT][pP])", lambda m: f"&#{ord(m.group())};", html.escape(str(x), quote=True))


def colour(v: float) -> tuple[str, bool]:
    """v in [-1, 1] -> (background rgb(), whether white text reads better): white at 0, blue at -1, red at +1."""
    end = POSITIVE if v >= 0 else NEGATIVE
    t = min(abs(v), 1.0)
    rgb = [round(255 + (c - 255) * t) for c in end]
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", t > 0.6


def fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else esc(x)


def label_text(x) -> str:
    return esc(" ".join(map(str, x)) if isinstance(x, list) else x)


def words_html(row: dict, explainer: str) -> str:
    """The sentence: each word on the background of its score / the row's largest |score|, the rationale
    underlined, words cut by truncation grey, for tag sequences the wrongly tagged words outlined."""
    scores = row["scores"].get(explainer)
    top = max((abs(v) for v in scores or [] if v is not None), default=0.0)
    rat = row.get("rationale") or [None] * len(row["words"])
    tags = isinstance(row["gold"], list) and isinstance(row["pred"], list)
    out = []
    for i, w in enumerate(row["words"]):
        if i == row.get("pair_start"):
            out.append('<span class="sep">&#8214;</span>')
        s = scores[i] if scores is not None else None
        cls, style, title = ["w"], "", []
        if s is None:
            cls.append("cut")
            title.append("no score (cut by truncation)" if scores is not None else "no score")
        else:
            bg, light = colour(s / top if top > 0 else 0.0)
            style = f' style="background:{bg}{";color:#fff" if light else ""}"'
            title.append(f"{explainer} {s:.4g}")
        if rat[i] == 1:
            cls.append("r")
            title.append("human rationale")
        if tags and i < len(row["gold"]) and i < len(row["pred"]):
            title.append(f"pred {row['pred'][i]} / gold {row['gold'][i]}")
            if row["pred"][i] != row["gold"][i]:
                cls.append("wrong")
        out.append(f'<span class="{" ".join(cls)}"{style} title="{esc("; ".join(title))}">{esc(w)}</span>')
    return " ".join(out)


def verdict(row: dict) -> str:
    """prediction vs gold: a tick or a cross, the labels, p of the prediction."""
    ok = row["pred"] == row["gold"]
    mark = '<span class="ok">&#10003;</span>' if ok else '<span class="bad">&#10007;</span>'
    p = f" (p {row['p_pred']:.2f})" if _number(row.get("p_pred")) else ""
    if isinstance(row["gold"], list):
        n = len(row["gold"])
        right = sum(a == b for a, b in zip(row["pred"], row["gold"], strict=False))
        return f"{mark} tags {right}/{n} right{p}"
    return f"{mark} pred <b>{esc(row['pred'])}</b>{p}" + ("" if ok else f", gold <b>{esc(row['gold'])}</b>")


def ap_of(row: dict, explainer: str):
    p = (row.get("plausibility") or {}).get(explainer)
    return p.get("ap") if isinstance(p, dict) else None


def plausibility_means(run: dict) -> dict[str, dict]:
    """explainer -> {metric: mean over the examples with a per-example value, n}."""
    out = {}
    for name in explainers_of(run):
        vals = [r["plausibility"][name] for r in run["rows"] if isinstance((r.get("plausibility") or {}).get(name),
                                                                           dict)]
        out[name] = {k: (sum(v[k] for v in vals if v.get(k) is not None) / n if (n := sum(
            v.get(k) is not None for v in vals)) else None) for k, _ in METRICS}
        out[name]["n"] = len(vals)
    return out


def test_metric(results: dict) -> str:
    t = results.get("test")
    if _number(t):
        return f"{results.get('metric', 'metric')} {100 * t:.2f}"
    if isinstance(t, dict):
        return ", ".join(f"{k} {100 * v:.2f}" for k, v in t.items() if _number(v)) or "-"
    return "-"


def describe(run: dict) -> list[tuple[str, str]]:
    res, cfg = run["results"], run["config"]
    setting = res.get("setting", cfg.get("shots") if cfg.get("task") != "nli" else cfg.get("train_size"))
    method = run["dir"].parent.name + (f" ({res['variant']})" if isinstance(res.get("variant"), str) else "")
    alpha = cfg.get("alpha")
    return [("run", run["dir"].name), ("method", method + (" &#8212; BaseModel (alpha 0)" if alpha == 0 else "")),
            ("data", f"{res.get('task', cfg.get('task', '-'))} {'' if setting is None else setting}"),
            ("model", str(cfg.get("model", "-"))), ("seed", str(res.get("seed", cfg.get("seed", "-")))),
            ("test", test_metric(res)), ("explained examples", str(len(run["rows"])))]


def header_html(run: dict, base: dict | None, explainer: str) -> str:
    runs = [run] + ([base] if base else [])
    heads = "".join(f"<th class=l>{'run' if r is run else 'baseline'}</th>" for r in runs)
    rows = zip(*[describe(r) for r in runs], strict=True)
    body = "".join(f"<tr><th class=l>{esc(cells[0][0])}</th>" +
                   "".join(f"<td class=l>{esc(v) if k in ('run', 'model', 'data', 'seed') else v}</td>"
                           for k, v in cells) + "</tr>" for cells in rows)
    out = f"<table><tr><th></th>{heads}</tr>{body}</table>"
    means = [plausibility_means(r) for r in runs]
    cols = "".join(f"<th>{name}</th>" for _, name in METRICS)
    head2 = "<tr><th class=l>explainer</th>" + f"{cols}<th>n</th>" * len(runs) + \
        (f"{cols.replace('<th>', '<th>&#916; ')}" if base else "") + "</tr>"
    top = "<tr><th></th>" + "".join(f"<th colspan={len(METRICS) + 1}>{'run' if r is run else 'baseline'}</th>"
                                    for r in runs) + (f"<th colspan={len(METRICS)}>run &#8722; baseline</th>"
                                                      if base else "") + "</tr>"
    body2 = ""
    for name in means[0]:
        cells = ""
        for m in means:
            v = m.get(name, {})
            cells += "".join(f"<td>{fmt(v.get(k))}</td>" for k, _ in METRICS) + f"<td>{v.get('n', '-')}</td>"
        if base:
            a, b = means[0][name], means[1].get(name, {})
            cells += "".join(f"<td>{fmt(a[k] - b[k]) if a.get(k) is not None and b.get(k) is not None else '-'}</td>"
                             for k, _ in METRICS)
        mark = " (shown below)" if name == explainer else ""
        body2 += f"<tr><td class=l>{esc(name)}{mark}</td>{cells}</tr>"
    n_rat = sum(1 for r in run["rows"] if r.get("rationale") is not None)
    out += ("<h2 id=plausibility>Plausibility against the human rationale</h2><p class=meta>Per example over the "
            "words the model saw, then the mean over the examples whose rationale has at least one word and is not "
            f"every word (n; {n_rat} of {len(run['rows'])} explained examples carry a rationale). Token AP: average "
            "precision of the word scores; token F1 and IOU F1: the top-k words, k = the rationale's length "
            "(docs/report.md).</p>" + f"<table>{top}{head2}{body2}</table>")
    return out


def legend_html(explainer: str) -> str:
    return (f'<p class=legend>Colour: the <b>{esc(explainer)}</b> score of each word divided by the largest |score| '
            'of its row: &#8722;1 <span class=bar></span> +1 (blue: against the prediction, red: for it; white: 0). '
            '<span class="w r">underlined</span>: human rationale. <span class="w wrong">outlined</span>: wrong tag. '
            '<span class="w cut">grey</span>: cut by truncation (no score). Hover a word for its score.</p>')


def example_html(row: dict, base_row: dict | None, explainer: str, number: int) -> str:
    ap = ap_of(row, explainer)
    info = f"#{number} &#183; id {esc(row['id'])} &#183; gold <b>{label_text(row['gold'])}</b>"
    if ap is not None:
        info += f" &#183; AP {ap:.3f}"
        b = ap_of(base_row, explainer) if base_row else None
        if b is not None:
            d = ap - b
            cls, arrow = ("up", "&#9650;") if d > 0 else ("down", "&#9660;") if d < 0 else ("", "=")
            info += f' (baseline {b:.3f}, <span class="{cls}">{arrow} {d:+.3f}</span>)'
    elif row.get("rationale") is None:
        info += " &#183; no rationale"
    out = f'<div class=ex><div class=meta>{info}</div>'
    out += f'<div class=line><span class=tag>run</span> {words_html(row, explainer)} &#160; {verdict(row)}</div>'
    if base_row is not None:
        out += (f'<div class=line><span class=tag>baseline</span> {words_html(base_row, explainer)} &#160; '
                f'{verdict(base_row)}</div>')
    return out + "</div>"


def order(run: dict, base: dict | None, explainer: str) -> list[tuple[int, dict, dict | None]]:
    """(number in the file, row, baseline row): with a baseline, the largest |change of AP| first (then the others,
    in file order); without, file order."""
    by_id = {r["id"]: r for r in base["rows"]} if base else {}
    items = [(i + 1, r, by_id.get(r["id"])) for i, r in enumerate(run["rows"])]
    if not base:
        return items

    def change(item):
        a, b = ap_of(item[1], explainer), ap_of(item[2], explainer)
        return (0, -abs(a - b), item[0]) if a is not None and b is not None else (1, 0.0, item[0])
    return sorted(items, key=change)


def render(run: dict, base: dict | None, explainer: str) -> str:
    title = f"{run['dir'].parent.name}/{run['dir'].name}" + (f" vs {base['dir'].name}" if base else "")
    series = [("run", epochs_of(run["log"] or []))] + ([("baseline", epochs_of(base["log"] or []))] if base else [])
    png = curves_png(series)
    items = order(run, base, explainer)
    changed = [it for it in items if it[2] is not None and it[1]["pred"] != it[2]["pred"]]
    nav = ["<a href=#plausibility>plausibility</a>", "<a href=#curves>training curves</a>",
           f"<a href=#examples>all examples ({len(items)})</a>"]
    if base:
        nav.append(f"<a href=#changed>prediction changed ({len(changed)})</a>")
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>", f"<nav>{' '.join(nav)}</nav>",
             header_html(run, base, explainer), "<h2 id=curves>Training curves</h2>"]
    if png is None:
        parts.append("<p class=meta>No epoch records in log.jsonl.</p>")
    else:
        parts.append(f'<img alt="training curves" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    if base:
        moved = [ap_of(r, explainer) - ap_of(b, explainer) for _, r, b in items
                 if b is not None and ap_of(r, explainer) is not None and ap_of(b, explainer) is not None]
        up, down, same = sum(d > 0 for d in moved), sum(d < 0 for d in moved), sum(d == 0 for d in moved)
        parts.append(f"<p>Of the {len(moved)} examples with a usable rationale, the attribution of "
                     f"<b>{esc(explainer)}</b> moved towards the human rationale (higher AP) on <b>{up}</b>, away on "
                     f"<b>{down}</b>, unchanged on {same}. The prediction changed on {len(changed)} of {len(items)} "
                     "explained examples.</p>")
    sort_note = ("sorted by the largest change of the explainer's per-example AP (run minus baseline; examples "
                 "without a rationale last)" if base else "in test-set order")
    parts += [f"<h2 id=examples>Examples ({len(items)}), {sort_note}</h2>", legend_html(explainer)]
    parts += [example_html(r, b, explainer, n) for n, r, b in items]
    if base:
        parts.append(f"<h2 id=changed>Prediction changed ({len(changed)})</h2>")
        parts += [example_html(r, b, explainer, n) for n, r, b in changed] or ["<p>None.</p>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="report.py", description=__doc__.split("\n")[0])
    tb.add(p, "run_dir", metavar="RUN_DIR", domain=tb.PATH, help="a run directory holding explanations.jsonl "
           "(written with --explain-examples N > 0), beside config.json, results.json and log.jsonl")
    tb.add(p, "--against", metavar="BASE_RUN_DIR", domain=tb.PATH, help="a baseline run directory that explained "
           "the same examples (e.g. the same script with --alpha 0, same seed): its rows go under the run's")
    tb.add(p, "-o", "--output", metavar="PATH", domain=tb.PATH, help="the HTML file to write: a path in an "
           "existing, writable folder, not a folder (default: RUN_DIR/report.html)")
    tb.add(p, "--explainer", metavar="NAME", domain=tb.TEXT, help="the explainer whose scores colour the words: one "
           "of the run's explainers (default: the method's own, else ig)")
    return p


def check_output(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"-o {path}: is a folder; give a file path such as {path / 'report.html'}")
    if not path.parent.is_dir():
        raise UsageError(f"-o {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"-o {path}: not writable")


def main(argv=None) -> int:
    opts = build_parser().parse_args(argv)
    out = Path(opts.output) if opts.output else Path(opts.run_dir) / "report.html"
    if opts.output:
        check_output(out)
    run = read_run(opts.run_dir, "RUN_DIR")
    if not opts.output:
        check_output(out)
    base = read_run(opts.against, "--against") if opts.against else None
    if base:
        check_same_examples(run, base)
    explainer = opts.explainer or default_explainer(run)
    for r, what in ((run, "the run"), (base, "the baseline")):
        if r is not None and explainer not in explainers_of(r):
            raise UsageError(f"--explainer {explainer}: {what} ({r['dir']}) has no such explainer (it has: "
                             f"{', '.join(explainers_of(r))})")
    page = render(run, base, explainer)
    write_atomic(out, page)
    print(f"report: {len(run['rows'])} examples, explainer {explainer} -> {out}")
    return 0


def cli(argv=None) -> int:
    return run_cli(main, "report.py", argv)


if __name__ == "__main__":
    sys.exit(cli())
