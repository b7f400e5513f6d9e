"""Reading and aligning a rationale dataset (common.read_rationale_data + common.align_rationales) against the
tokenizer's own batch speed on the same texts, measured in one run.

    python bench/bench_read_align.py [--n 20000] [--words 200] [--model NAME_OR_PATH] [--max-len 512]

Writes --n examples of about --words words each (sentences of the shipped SNIPS training set strung together; the
rationale of half of them as a 0/1 word list, of the other half as character spans) to a temporary folder in the
JSONL rationale format (docs/own_data.md), then times each of the following --repeats times, in turn within each
repeat (so that load on the machine hits all alike), and shows the medians of wall-clock and CPU time (CPU time of
all threads: the Rust tokenizer may use several):
- tokenizer (Rust): the fast tokenizer's own batch call (`backend_tokenizer.encode_batch`, truncation at --max-len)
  on the same texts: the limit;
- tokenizer (transformers): the transformers call most code makes (`tokenizer(texts, truncation=True, ...)`);
- read: reading and checking train.jsonl into the in-memory representation;
- align: align_rationales (one tokenizer call per batch of --batch-size, then numpy);
- read + align: the two together, against the limit (goal: at most 2x).
Seconds are per 10,000 examples, on the CPU named in the output; the ratios are what carries over to other machines.
"""
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import run_bench  # noqa: E402

import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), with the cores this process may use."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} core(s) usable"


def generate(n: int, words: int, seed: int) -> list[dict]:
    """n JSONL rows of about `words` words: SNIPS training sentences strung together, a random rationale (a 0/1
    list for even rows, character spans of the same words for odd rows), three labels."""
    sentences = (ROOT / "data" / "snips" / "train" / "seq.in").read_text().split("\n")
    sentences = [s for s in sentences if s.strip()]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ws = []
        while len(ws) < words:
            ws += rng.choice(sentences).split()
        text = " ".join(ws)
        mask = [int(rng.random() < 0.1) for _ in ws]
        row = {"id": i, "text": text, "label": ("negative", "neutral", "positive")[i % 3]}
        if i % 2 == 0:
            row["rationale"] = mask
        else:
            spans, pos = [], 0
            for w, m in zip(ws, mask, strict=True):
                if m:
                    spans.append([pos, pos + len(w)])
                pos += len(w) + 1
            row["rationale_spans"] = spans
        rows.append(row)
    return rows


def interleaved(steps: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Median wall-clock and CPU seconds of each step (run in turn within each repeat), and each step's last output
    (timing.interleaved_medians times wall clock only)."""
    wall, cpu, out = {k: [] for k in steps}, {k: [] for k in steps}, {}
    for _ in range(repeats):
        for name, fn in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return ({k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()},
            out)


def build_parser():
    p = tb.OneLineParser(prog="bench_read_align.py", description=tb.first_paragraph(__doc__))
    tb.add(p, "--n", default=20000, domain=tb.Int(1, 10**7), help="examples")
    tb.add(p, "--words", default=200, domain=tb.Int(1, 100000), help="about this many words per example")
    tb.add(p, "--model", default=common.DEFAULT_MODEL, domain=tb.TEXT, help="the tokenizer of this model: a Hugging "
           "Face name or a local folder")
    tb.add(p, "--max-len", default=512, domain=tb.Int(8, 100000), help="truncation, in wordpieces (at most the "
           "model's position limit)")
    tb.add(p, "--batch-size", default=1000, domain=tb.Int(1, 10**6), help="examples per tokenizer call of "
           "align_rationales")
    tb.add(p, "--repeats", default=3, domain=tb.Int(1, 1000), help="timings per step (medians)")
    tb.add(p, "--seed", default=0, domain=tb.Int(0, 2**32 - 1), help="seed of the generated examples")
    return p


def parse_args(argv=None):
    """The flags checked, the model's name and --max-len against its position limit (its config only)."""
    a = build_parser().parse_args(argv)
    common.check_max_len(a.model, a.max_len)
    return a


def main(a) -> dict:
    tok = common.load_tokenizer(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = generate(a.n, a.words, a.seed)
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        texts = [r["text"] for r in rows]
        n_words = sum(len(t.split()) for t in texts) / a.n
        del rows
        backend = tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str())  # a copy: our settings
        backend.no_padding()
        backend.enable_truncation(a.max_len)
        data = common.read_rationale_data(str(folder), "jsonl", splits=("train",))
        steps = {
            "tokenizer (Rust encode_batch): the limit": lambda: len(backend.encode_batch(texts)),
            "tokenizer (transformers call)": lambda: len(tok(texts, truncation=True, max_length=a.max_len).encodings),
            "read (JSONL -> examples)": lambda: len(common.read_rationale_data(str(folder), "jsonl",
                                                                               splits=("train",))["train"]),
            "align (align_rationales)": lambda: common.align_rationales(tok, data["train"], a.max_len,
                                                                        a.batch_size)[1],
        }
        wall, cpu, out = interleaved(steps, a.repeats)
        n_pieces = sum(len(e.ids) for e in backend.encode_batch(texts[:1000])) / min(a.n, 1000)
    counts = out["align (align_rationales)"]
    limit = "tokenizer (Rust encode_batch): the limit"
    for t in (wall, cpu):
        t["read + align"] = t["read (JSONL -> examples)"] + t["align (align_rationales)"]
    per = 10000 / a.n
    print(f"{a.n} examples, {n_words:.0f} words and {n_pieces:.0f} wordpieces each on average (max-len {a.max_len}),"
          f" tokenizer {type(tok).__name__} of {a.model}; medians of {a.repeats} run(s)")
    print(f"CPU: {cpu_name()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}")
    print(f"{'step':42s} {'wall s/10k':>10s} {'x limit':>8s} {'CPU s/10k':>10s} {'x limit':>8s}")
    for name in wall:
        print(f"{name:42s} {wall[name] * per:10.3f} {wall[name] / wall[limit]:8.2f} {cpu[name] * per:10.3f} "
              f"{cpu[name] / cpu[limit]:8.2f}")
    ratio, ratio_cpu = wall["read + align"] / wall[limit], cpu["read + align"] / cpu[limit]
    print(f"read + align = {ratio:.2f} x the tokenizer's own batch time, wall clock ({ratio_cpu:.2f} x in CPU time; "
          f"goal: at most 2x); rationale counts: {counts}")
    return {"ratio": ratio, "ratio_cpu": ratio_cpu,
            "seconds_per_10k": {k: v * per for k, v in wall.items()}, "counts": counts}


def cli(argv=None) -> int:
    return run_bench(main, parse_args, "bench_read_align.py", argv, errors=(common.UsageError,))


if __name__ == "__main__":
    sys.exit(cli())
