"""Run a sweep (commands x seeds) as independent jobs, locally or as SLURM job arrays; resumable.

A sweep is a list of commands, each run once per seed. Named sweeps (`bench/sweeps.py`) reproduce the README's
tables; `--command` (repeated) defines one on the command line. Every job is

    <command> --seed S --out-dir <root>/<sweep>/<job id>  [--data-dir D] [--device X]

run from the repository root (a leading `python` is the interpreter running this script), its output in
`<root>/<sweep>/<job id>/job.log` (the command, then stdout and stderr). `<root>/<sweep>/jobs.json` lists the
jobs (job id -> row, column, seed, stage, command) and the table's layout; `bench/table.py` reads it.

Usage:
    python bench/sweep.py uimer-ic1-paired --launcher local --workers 2          # run (or finish) it here
    python bench/sweep.py uimer-ic1-paired --dry-run                             # list the jobs, run nothing
    python bench/sweep.py smat-table1 --launcher slurm --partition gpu --gpus-per-job 1 --cpus-per-job 4 \\
        --time 2:00:00 --mem 16G --data-dir path/to/data                         # one job array per stage
    python bench/sweep.py smat-table1 --launcher slurm --dry-run                 # the sbatch parameters
    python bench/sweep.py --name mine --seeds 1,2 --command "python uimer_im.py --task ic --shots 1 --alpha 0" \\
        --command "python uimer_im.py --task ic --shots 1" --workers 2
    python bench/sweep.py --print-commands uimer-table2 [--by-row]               # the shell commands, for docs
    python bench/table.py uimer-ic1-paired                                       # the table, paired statistics

Records: when a job finishes, its record (results.json, config.json, its test predictions compressed; at most
about 20 KB) is written to `<results>/<sweep>/<job id>.json`, and the sweep's layout to `<results>/<sweep>/jobs.json`
(`--results`, default: results/ at the repository root); bench/table.py recomputes every number of the table from
them, in a clone without runs/. `--record-only` records the finished jobs of `<root>/<sweep>/` and runs nothing
(results/README.md has the format).

Resuming: run the same command again. A job that has a record, or whose directory holds a complete `results.json`
(anywhere below it; then its record is written first), is skipped, so a sweep resumes from a clone that has only
results/; an incomplete job directory is removed and the job rerun. A job that a job still to run needs
(`{dir:ROW}`, the SMaT teacher) is rerun when only its record is here. A failed job (non-zero exit, or no
results.json) is reported with its log and does not stop the others; later stages do not start after a
failure, and the exit code is then 1.

Stages: a sweep may have ordered stages (SMaT: the teacher, then the students). Locally a stage starts when
every job of the previous stage has succeeded. On SLURM each stage is one job array (`submitit`), submitted
with `--dependency=afterok:<previous array>`; each array task runs `sweep.py --run-job <job dir>`, the same job
runner as the local launcher, so the directory layout on the shared filesystem is the same.

A real scheduler: tests/test_sweep.py starts a one-node SLURM (slurmctld + slurmd on 127.0.0.1, Debian's
`slurm-wlm`) in a temp dir and runs a two-stage sweep through it, and skips where SLURM is not installed; it
also runs the same arrays through submitit's local executor (`--cluster local`), which needs no SLURM.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweeps as named_sweeps  # noqa: E402
from records import (  # noqa: E402
    find_results,
    layout_of,
    make_record,
    portable_command,
    read_layout,
    read_record,
    record_path,
    results_files,
    write_record,
)
from toolbox import (  # noqa: E402
    DEVICE,
    EXISTING_DIR,
    OUT_DIR,
    PATH,
    REPO,
    SEEDS,
    SHELL_ARGS,
    SHELL_COMMAND,
    TEXT,
    Domain,
    Int,
    OneLineParser,
    UsageError,
    add,
    ensure_dir,
    first_paragraph,
    names_list,
    one_line,
    write_json_atomic,
)
from toolbox import run_cli as _run_cli  # noqa: E402

SWEEP_PY = Path(__file__).resolve()
DIR_REF = re.compile(r"\{dir:([^}]+)\}")
POLL_S = 0.2
write_json = write_json_atomic  # jobs.json: strict JSON, written atomically


# ------------------------------------------------------------------------------------------------------
# Sweep -> jobs
# ------------------------------------------------------------------------------------------------------
def slug(text: str, max_len: int = 60) -> str:
    """A readable, filesystem-safe id: lower case, runs of other characters -> '-'; long ones get a hash."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    if len(s) > max_len:
        s = s[:max_len - 9].rstrip("-") + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return s


def job_id(row: str, column: str, seed: int) -> str:
    return "-".join(p for p in (slug(row), slug(column) if column else "", f"s{seed}") if p)


def adhoc_sweep(commands: list[str], labels: list[str], seeds: list[int], metric_key: list[str],
                summary: str, baseline: str | None) -> dict:
    """A sweep from --command flags: one row per command (labelled by --label, else the command), one column."""
    if labels and len(labels) != len(commands):
        raise UsageError(f"--label given {len(labels)} times for {len(commands)} --command")
    names = labels or [c[len("python "):] if c.startswith("python ") else c for c in commands]
    if len(set(names)) != len(names):
        raise UsageError("two --command rows have the same label; give --label for each")
    if baseline is not None and baseline not in names:
        raise UsageError(f"--baseline {baseline!r} is not one of the row labels {names}")
    return {"title": "", "seeds": tuple(seeds), "metric_key": metric_key, "scale": 100, "summary": summary,
            "baseline": baseline or names[0], "stages": ["main"], "columns": {"": {"args": "", "metric": "auto"}},
            "rows": [{"name": n, "command": c} for n, c in zip(names, commands, strict=True)]}


def cell_command(row: dict, column: str, col_spec: dict, extra_args: str = "") -> str:
    """The row's command with `{col}` replaced by the column's args, plus the cell's and the sweep's extras."""
    cmd = row["command"].replace("{col}", col_spec.get("args", ""))
    parts = [cmd, row.get("cell_args", {}).get(column, ""), extra_args]
    return " ".join(" ".join(p.split()) for p in parts if p.strip())


def expand(sweep: dict, sweep_dir: Path, seeds: list[int] | None = None, extra_args: str = "") -> list[dict]:
    """Every job of the sweep, in stage order then row, column, seed order. `seeds` overrides the sweep's
    (not a row's own). `{dir:ROW}` becomes the job directory of ROW's single job in the same column."""
    stages = list(sweep["stages"])
    jobs, by_row = [], {}
    for row in sweep["rows"]:
        stage = row.get("stage", stages[0])
        if stage not in stages:
            raise UsageError(f"row {row['name']!r}: unknown stage {stage!r} (stages: {stages})")
        row_seeds = list(row.get("seeds") or seeds or sweep["seeds"])
        for column, spec in sweep["columns"].items():
            for seed in row_seeds:
                job = {"id": job_id(row["name"], column, seed), "row": row["name"], "column": column,
                       "seed": int(seed), "stage": stage, "table": row.get("table", True),
                       "command": cell_command(row, column, spec, extra_args)}
                jobs.append(job)
                by_row.setdefault((row["name"], column), []).append(job)
    ids = [j["id"] for j in jobs]
    if len(set(ids)) != len(ids):
        raise UsageError("two jobs of the sweep have the same id (rows or columns differ only in punctuation)")
    for job in jobs:
        needs = [referenced_job(job, row, by_row, stages)["id"] for row in DIR_REF.findall(job["command"])]
        if needs:
            job["needs"] = needs
        job["command"] = DIR_REF.sub(lambda m, job=job: str(sweep_dir / referenced_job(job, m.group(1), by_row,
                                                                                        stages)["id"]), job["command"])
    return sorted(jobs, key=lambda j: stages.index(j["stage"]))  # stable: row, column, seed order kept


def referenced_job(job: dict, row: str, by_row: dict, stages: list[str]) -> dict:
    refs = by_row.get((row, job["column"]))
    if not refs:
        raise UsageError(f"job {job['id']}: {{dir:{row}}} names no row of the sweep")
    if len(refs) != 1 or stages.index(refs[0]["stage"]) >= stages.index(job["stage"]):
        raise UsageError(f"job {job['id']}: {{dir:{row}}} must name a row with one seed in an earlier stage")
    return refs[0]


def job_argv(job: dict, job_dir: Path, data_dir: str | None, device: str | None) -> list[str]:
    argv = shlex.split(job["command"]) + ["--seed", str(job["seed"]), "--out-dir", str(job_dir)]
    if data_dir:
        argv += ["--data-dir", data_dir]
    if device:
        argv += ["--device", device]
    return argv


def make_manifest(name: str, sweep: dict, jobs: list[dict], sweep_dir: Path, data_dir: str | None,
                  device: str | None) -> dict:
    """jobs.json: what every job runs, and the table's layout (so bench/table.py needs nothing else)."""
    entries = {}
    for job in jobs:
        entries[job["id"]] = {**{k: v for k, v in job.items() if k != "id"},
                              "argv": job_argv(job, sweep_dir / job["id"], data_dir, device)}
    table_rows = [r["name"] for r in sweep["rows"] if r.get("table", True)]
    return {"sweep": name, "title": sweep.get("title", ""), "cwd": str(REPO), "metric_key": list(sweep["metric_key"]),
            "scale": sweep.get("scale", 1), "summary": sweep["summary"], "baseline": sweep["baseline"],
            "stages": list(sweep["stages"]), "rows": table_rows,
            "columns": {c: spec.get("metric", "auto") for c, spec in sweep["columns"].items()},
            "paper": {r["name"]: dict(r.get("paper", {})) for r in sweep["rows"] if r.get("table", True)},
            "jobs": entries}


# ------------------------------------------------------------------------------------------------------
# Which jobs are done: a record in results/, or a complete run directory (recorded on the way)
# ------------------------------------------------------------------------------------------------------
def has_record(records_dir: Path | None, jid: str, entry: dict, sweep_dir: Path) -> bool:
    """Whether `jid` has a record; one made for another command is an error naming it (never silently used)."""
    if records_dir is None or not record_path(records_dir, jid).exists():
        return False
    read_record(record_path(records_dir, jid), jid, {**entry, "command": portable_command(entry["command"], sweep_dir)})
    return True


def record_job(manifest: dict, jid: str, sweep_dir: Path, records_dir: Path) -> Path:
    record = make_record(manifest["sweep"], jid, manifest["jobs"][jid], sweep_dir / jid, sweep_dir)
    return write_record(ensure_dir(records_dir, "--results"), record)


def survey(manifest: dict, sweep_dir: Path, records_dir: Path | None, write: bool = True) -> tuple[set, int]:
    """(ids of the jobs that are done, how many of them only from their record). A finished job without a record
    gets one (unless `write` is False). A job that a job still to run needs (`{dir:ROW}`) is done only if its
    run directory is here: with a record alone it is run again."""
    entries = manifest["jobs"]
    finished = {j for j in entries if find_results(sweep_dir / j)}
    recorded = {j for j, e in entries.items() if has_record(records_dir, j, e, sweep_dir)}
    if write and records_dir is not None:
        for jid in sorted(finished - recorded):
            record_job(manifest, jid, sweep_dir, records_dir)
    done = finished | recorded
    changed = True
    while changed:  # a job to run needs its referenced job's directory (the SMaT teacher's model)
        changed = False
        for jid in [j for j in entries if j not in done]:
            for need in entries[jid].get("needs", []):
                if need in done and need not in finished:
                    done.discard(need)
                    changed = True
    return done, len(done - finished)


# ------------------------------------------------------------------------------------------------------
# One job: directory, subprocess, log
# ------------------------------------------------------------------------------------------------------
def job_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_job(entry: dict, job_dir: Path, threads: int, cwd: str):
    """Clear an incomplete job directory, write the log header, start the command in its own process group."""
    try:
        if job_dir.is_dir() and not job_dir.is_symlink():
            shutil.rmtree(job_dir)
        elif job_dir.exists() or job_dir.is_symlink():
            job_dir.unlink()
    except OSError as e:
        raise UsageError(f"cannot remove the incomplete job directory {job_dir} ({e.strerror or e})") from None
    ensure_dir(job_dir, "job directory")
    argv = list(entry["argv"])
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    log = open(job_dir / "job.log", "w")
    log.write(f"# job {job_dir.name}: row {entry['row']!r}, column {entry['column']!r}, seed {entry['seed']}\n"
              f"# command: {shlex.join(argv)}\n# cwd: {cwd}\n# threads: {threads}\n"
              f"# started: {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    log.flush()
    proc = subprocess.Popen(argv, cwd=cwd, env=job_env(threads), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()  # the child holds its own copy
    return proc


def finish_job(job_dir: Path, returncode: int, seconds: float, record=None) -> str | None:
    """Append the outcome to the log; None if the job succeeded, else why it failed. `record()` writes the job's
    record (a job whose record cannot be made, e.g. a results.json with NaN, has failed)."""
    if returncode == 0 and find_results(job_dir) is None:
        why = "exit 0 but no complete results.json below the job directory"
    else:
        why = None if returncode == 0 else f"exit {returncode}"
    if why is None and record is not None:
        try:
            record()
        except UsageError as e:
            why = f"finished, but no record: {one_line(e)}"
    with open(job_dir / "job.log", "a") as log:
        log.write(f"\n# finished after {seconds:.1f} s: {why or 'ok'}\n")
    return why


def stop_process(proc, log_path: Path, reason: str, grace_s: float = 10.0) -> None:
    """SIGTERM the job's process group, SIGKILL it after `grace_s`, reap it, note it in the log."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with open(log_path, "a") as log:
        log.write(f"\n# stopped by sweep.py ({reason})\n")


def run_job(job_dir: Path, threads: int) -> int:
    """`--run-job`: run one job of the manifest in `job_dir`'s parent (a SLURM array task). 0 on success."""
    if not (job_dir.parent / "jobs.json").is_file():
        raise UsageError(f"--run-job {job_dir}: no jobs.json in {job_dir.parent}")
    manifest = read_layout(job_dir.parent / "jobs.json")
    entry = manifest["jobs"].get(job_dir.name)
    if entry is None or not isinstance(entry.get("argv"), list) or not isinstance(manifest.get("cwd"), str):
        raise UsageError(f"{job_dir.name} is not a job of {job_dir.parent / 'jobs.json'}")
    records_dir = Path(manifest["records"]) if isinstance(manifest.get("records"), str) else None
    if find_results(job_dir):
        if records_dir is not None and not record_path(records_dir, job_dir.name).exists():
            record_job(manifest, job_dir.name, job_dir.parent, records_dir)
        print(f"{job_dir.name}: already complete")
        return 0
    t0 = time.time()
    proc = start_job(entry, job_dir, threads, manifest["cwd"])
    stopped = []

    def forward(signum, frame):  # scancel / time limit: stop the job's process group too
        stopped.append(signum)
        stop_process(proc, job_dir / "job.log", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = proc.wait()
    if stopped:
        return 128 + stopped[0]
    record = None if records_dir is None else (lambda: record_job(manifest, job_dir.name, job_dir.parent, records_dir))
    why = finish_job(job_dir, rc, time.time() - t0, record)
    print(f"{job_dir.name}: {why or 'ok'} (log: {job_dir / 'job.log'})")
    return 1 if why else 0


# ------------------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------------------
def fmt_s(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """done / running / failed / to do, elapsed, time left from the mean duration of jobs finished here."""

    def __init__(self, total: int, done: int, workers: int, stream=None):
        self.total, self.done, self.failed, self.workers = total, done, 0, max(1, workers)
        self.running: dict[str, float] = {}
        self.durations: list[float] = []
        self.t0 = time.time()
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.last = ""

    def line(self) -> str:
        todo = self.total - self.done - self.failed - len(self.running)
        eta = "?"
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            now = time.time()
            work = todo * mean + sum(max(0.0, mean - (now - t)) for t in self.running.values())
            slots = min(self.workers, todo + len(self.running)) or 1
            eta = fmt_s(work / slots)
        return (f"[sweep] done {self.done}/{self.total}  running {len(self.running)}  failed {self.failed}  "
                f"to do {todo}  elapsed {fmt_s(time.time() - self.t0)}  left ~{eta}")

    def show(self, force: bool = False) -> None:
        line = self.line()
        key = line if self.tty else line.split("  elapsed")[0]  # a TTY line also refreshes its clock
        if key == self.last and not force:
            return
        self.last = key
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + message + "\n")
        self.stream.flush()
        if self.tty:
            self.stream.write(self.line())
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------------------------
# Local launcher
# ------------------------------------------------------------------------------------------------------
def run_local(manifest: dict, sweep_dir: Path, workers: int, threads: int, stream=None,
              records_dir: Path | None = None) -> int:
    """Run the manifest's unfinished jobs, `workers` at a time, stage by stage, recording each finished job in
    `records_dir` (None: no records). Returns the exit code."""
    stream = stream or sys.stdout
    entries = manifest["jobs"]
    order = {stage: i for i, stage in enumerate(manifest["stages"])}
    stage_of = {j: order[e["stage"]] for j, e in entries.items()}
    complete, from_records = survey(manifest, sweep_dir, records_dir)
    pending = sorted((j for j in entries if j not in complete), key=stage_of.get)
    progress = Progress(len(entries), len(complete), workers, stream)
    if complete:
        also = f" ({from_records} from their records in {records_dir})" if from_records else ""
        progress.say(f"[sweep] {len(complete)} of {len(entries)} jobs already complete{also}, skipped")
    running: dict[str, tuple] = {}
    failed: dict[str, str] = {}
    blocked: list[str] = []
    stop: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, frame: stop.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        progress.show(force=True)
        while (pending or running) and not stop:
            for jid, (proc, t0) in list(running.items()):
                if proc.poll() is not None:
                    del running[jid], progress.running[jid]
                    record = None if records_dir is None else \
                        (lambda jid=jid: record_job(manifest, jid, sweep_dir, records_dir))
                    why = finish_job(sweep_dir / jid, proc.returncode, time.time() - t0, record)
                    report_job(progress, sweep_dir, jid, why, time.time() - t0, failed)
            first_failed_stage = min((stage_of[j] for j in failed), default=len(order))
            blocked += [j for j in pending if stage_of[j] > first_failed_stage]
            pending = [j for j in pending if stage_of[j] <= first_failed_stage]
            busy_stage = min((stage_of[j] for j in list(pending) + list(running)), default=0)
            while pending and len(running) < workers and stage_of[pending[0]] == busy_stage:
                jid = pending.pop(0)  # a stage starts once every job of the earlier stages has ended
                running[jid] = (start_job(entries[jid], sweep_dir / jid, threads, manifest["cwd"]), time.time())
                progress.running[jid] = time.time()
            progress.show()
            time.sleep(POLL_S)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        if stop:
            name = signal.Signals(stop[0]).name
            progress.say(f"[sweep] {name}: stopping {len(running)} running job(s); run the same command to resume")
            for jid, (proc, _) in running.items():
                stop_process(proc, sweep_dir / jid / "job.log", name)
        progress.close()
    if stop:
        return 128 + stop[0]
    report_end(sweep_dir, failed, blocked, stream)
    return 1 if failed or blocked else 0


def report_job(progress: Progress, sweep_dir: Path, jid: str, why: str | None, seconds: float, failed: dict) -> None:
    if why:
        failed[jid] = why
        progress.failed += 1
        progress.say(f"[sweep] FAILED {jid} ({why}); log: {sweep_dir / jid / 'job.log'}")
    else:
        progress.done += 1
        progress.durations.append(seconds)
        progress.say(f"[sweep] done {jid} in {fmt_s(seconds)}")


def report_end(sweep_dir: Path, failed: dict, not_run: list[str], stream) -> None:
    for jid, why in failed.items():
        stream.write(f"[sweep] failed: {jid} ({why}); log: {sweep_dir / jid / 'job.log'}\n")
    if not_run:
        stream.write(f"[sweep] not started because an earlier stage failed: {', '.join(not_run)}\n")
    stream.write(f"[sweep] table: python bench/table.py {sweep_dir}\n")
    stream.flush()


# ------------------------------------------------------------------------------------------------------
# SLURM launcher (submitit): one job array per stage
# ------------------------------------------------------------------------------------------------------
def parse_minutes(text: str) -> int:
    """SLURM's time formats -> minutes (rounded up): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    if not re.fullmatch(r"(\d{1,5}-)?\d{1,7}(:\d{1,7}){0,2}", text.strip()):
        raise ValueError(text)
    days, rest = text.strip().split("-", 1) if "-" in text else ("0", text.strip())
    parts = [int(p) for p in rest.split(":")]
    if len(parts) > 3:
        raise ValueError(text)
    if "-" in text:  # D-H, D-H:M, D-H:M:S
        h, m, s = parts + [0] * (3 - len(parts))
    elif len(parts) == 3:  # H:M:S
        h, m, s = parts
    else:  # M or M:S
        h, m, s = 0, parts[0], parts[1] if len(parts) == 2 else 0
    return int(days) * 1440 + h * 60 + m + math.ceil(s / 60)


def parse_mem_gb(text: str) -> float:
    """'16G', '16GB', '500M', '16' (GB) -> GB."""
    m = re.fullmatch(r"(\d{1,9}(?:\.\d{1,9})?)\s*([GgMm]?)[Bb]?", text.strip())
    if not m:
        raise ValueError(text)
    value = float(m.group(1))
    return value / 1024 if m.group(2).lower() == "m" else value


def submitit_parameters(args, name: str, dependency: str | None) -> dict:
    """The executor parameters of one stage's array (submitit's generic names + slurm_ specific ones)."""
    params = {"name": name, "timeout_min": args.time, "cpus_per_task": args.cpus_per_job, "nodes": 1,
              "tasks_per_node": 1}
    if args.gpus_per_job:  # no --gpus-per-node=0: clusters without GPUs may reject any GPU request
        params["gpus_per_node"] = args.gpus_per_job
    if args.mem is not None:
        params["mem_gb"] = args.mem
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.array_parallelism:
        params["slurm_array_parallelism"] = args.array_parallelism
    extra = dict(args.sbatch)
    if dependency:
        params["slurm_dependency"] = f"afterok:{dependency}"
        extra["kill-on-invalid-dep"] = "yes"
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def sbatch_lines(params: dict, n_jobs: int) -> list[str]:
    """The #SBATCH lines submitit writes for these parameters (its flag names and formats)."""
    mem = params.get("mem_gb")
    flags = {"job-name": params["name"], "partition": params.get("slurm_partition"), "time": params["timeout_min"],
             "nodes": params["nodes"], "ntasks-per-node": params["tasks_per_node"],
             "cpus-per-task": params["cpus_per_task"], "gpus-per-node": params.get("gpus_per_node"),
             "mem": None if mem is None else (f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"),
             "array": f"0-{n_jobs - 1}%{min(n_jobs, params.get('slurm_array_parallelism', 256))}",
             "dependency": params.get("slurm_dependency")}
    flags.update(params.get("slurm_additional_parameters", {}))
    return [f"#SBATCH --{k}={shlex.quote(str(v))}" for k, v in flags.items() if v is not None]


def stage_groups(manifest: dict, sweep_dir: Path, records_dir: Path | None = None,
                 write: bool = True) -> list[tuple[str, list[str], int]]:
    """(stage, unfinished job ids, complete count) per stage, in order (records as in `survey`)."""
    done, _ = survey(manifest, sweep_dir, records_dir, write)
    out = []
    for stage in manifest["stages"]:
        ids = [j for j, e in manifest["jobs"].items() if e["stage"] == stage]
        todo = [j for j in ids if j not in done]
        out.append((stage, todo, len(ids) - len(todo)))
    return out


def run_slurm(manifest: dict, sweep_dir: Path, args, threads: int, stream=None) -> int:
    """Submit one submitit job array per stage (each task: `sweep.py --run-job`, which records the job in
    manifest["records"] when it finishes); wait if asked. Exit code."""
    stream = stream or sys.stdout
    records_dir = Path(manifest["records"]) if manifest.get("records") else None
    groups = stage_groups(manifest, sweep_dir, records_dir)
    if not any(todo for _, todo, _ in groups):
        stream.write(f"[sweep] all {len(manifest['jobs'])} jobs complete\n")
        stream.write(f"[sweep] table: python bench/table.py {sweep_dir}\n")
        return 0
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install -r requirements.txt") from None
    try:
        executor = submitit.AutoExecutor(folder=str(sweep_dir / ".submitit" / "%j"), cluster=args.cluster)
    except RuntimeError as e:
        raise UsageError(f"cannot use SLURM here ({e}); try --dry-run, or --launcher local") from None
    command = [sys.executable, str(SWEEP_PY), "--threads-per-job", str(threads), "--run-job"]
    submitted, previous = [], None
    for stage, todo, done in groups:
        if not todo:
            continue
        if args.cluster != "slurm" and submitted:  # no scheduler to hold the array: wait here instead
            if wait_jobs(submitted, sweep_dir, stream, args, records_dir=records_dir) != 0:
                stream.write(f"[sweep] stage {stage!r} not submitted: an earlier stage failed\n")
                return 1
        executor.update_parameters(**submitit_parameters(args, f"{manifest['sweep']}-{stage}", previous))
        fn = submitit.helpers.CommandFunction(command, verbose=True)
        jobs = executor.map_array(fn, [str(sweep_dir / j) for j in todo])
        previous = jobs[0].job_id.split("_")[0]
        submitted += list(zip(todo, jobs, strict=True))
        stream.write(f"[sweep] stage {stage!r}: array {previous} of {len(todo)} job(s) submitted "
                     f"({done} already complete); submitit logs: {sweep_dir / '.submitit'}\n")
    if args.wait or args.cluster != "slurm":
        return wait_jobs(submitted, sweep_dir, stream, args, final=True, records_dir=records_dir)
    stream.write(f"[sweep] not waiting (--wait to wait). Rerun this command to submit what is missing; "
                 f"table: python bench/table.py {sweep_dir}\n")
    return 0


def wait_jobs(submitted: list, sweep_dir: Path, stream, args, final: bool = False,
              records_dir: Path | None = None) -> int:
    """Poll submitit jobs until all have ended; progress lines; failures with their logs. 0 if all succeeded
    (finished and, with `records_dir`, recorded)."""
    progress = Progress(len(submitted), 0, len(submitted), stream)
    pending = dict(submitted)
    failed = {}
    poll, max_poll = POLL_S, (POLL_S if args.cluster != "slurm" else 15.0)  # SLURM: back off to 15 s
    while pending:
        for jid, job in list(pending.items()):
            if not job.done():
                progress.running.setdefault(jid, time.time())
                continue
            del pending[jid]
            progress.running.pop(jid, None)
            if find_results(sweep_dir / jid) and (records_dir is None or record_path(records_dir, jid).is_file()):
                progress.done += 1
            else:
                progress.failed += 1
                failed[jid] = f"SLURM job {job.job_id} ({job.state})"
                progress.say(f"[sweep] FAILED {jid}; log: {sweep_dir / jid / 'job.log'} "
                             f"(submitit: {job.paths.stdout})")
        progress.show()
        if pending:
            time.sleep(poll)
            poll = min(max_poll, 1.5 * poll)
    progress.close()
    if final:
        report_end(sweep_dir, failed, [], stream)
    return 1 if failed else 0


def dry_run(manifest: dict, sweep_dir: Path, args, threads: int, stream=None) -> None:
    """Print each stage's jobs (and with slurm the #SBATCH lines of its array); create nothing."""
    stream = stream or sys.stdout
    groups = stage_groups(manifest, sweep_dir, Path(manifest["records"]) if manifest.get("records") else None,
                          write=False)
    for number, (stage, todo, done) in enumerate(groups):
        stream.write(f"# stage {stage!r}: {len(todo)} job(s) to run, {done} already complete\n")
        if args.launcher == "slurm" and todo:
            dep = "<array of the previous stage>" if any(t for _, t, _ in groups[:number]) else None
            params = submitit_parameters(args, f"{manifest['sweep']}-{stage}", dep)
            stream.write("\n".join(sbatch_lines(params, len(todo))) + "\n")
            task = [sys.executable, str(SWEEP_PY), "--threads-per-job", str(threads), "--run-job",
                    str(sweep_dir / "<job id>")]
            stream.write(f"# each array task: {shlex.join(task)}\n")
        for jid in todo:
            stream.write(f"{jid}: {shlex.join(manifest['jobs'][jid]['argv'])}\n")


# ------------------------------------------------------------------------------------------------------
# Commands for the docs
# ------------------------------------------------------------------------------------------------------
def print_commands(name: str, sweep: dict, root: str, by_row: bool, data_dir: str | None = None,
                   stream=None) -> None:
    """One line per job, or with `by_row` one shell loop over the seeds per row and column; `# stage:` lines
    between stages. Paths are relative to the repository root when --root is."""
    stream = stream or sys.stdout
    sweep_dir = Path(root) / name
    jobs = expand(sweep, sweep_dir)
    stage, seen = None, set()
    for job in jobs:
        if len(sweep["stages"]) > 1 and job["stage"] != stage:
            stage = job["stage"]
            stream.write(f"# stage: {stage}\n")
        if not by_row:
            stream.write(shlex.join(job_argv(job, sweep_dir / job["id"], data_dir, None)) + "\n")
            continue
        key = (job["row"], job["column"])
        if key in seen:
            continue
        seen.add(key)
        seeds = " ".join(str(j["seed"]) for j in jobs if (j["row"], j["column"]) == key)
        out = shlex.quote(str(sweep_dir / job["id"][:-len(str(job["seed"]))]))
        data = f" --data-dir {shlex.quote(data_dir)}" if data_dir else ""
        command = shlex.join(shlex.split(job["command"]))
        stream.write(f"for S in {seeds}; do {command} --seed $S --out-dir {out}$S{data}; done\n")


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------
def _slug_name(text: str) -> str:
    if slug(text) != text:
        raise ValueError(text)
    return text


def _named_sweep(text: str) -> str:
    if text not in named_sweeps.SWEEPS:
        raise ValueError(text)
    return text


def _metric_key(text: str) -> list[str]:
    keys = text.split(".")
    if any(not k.strip() for k in keys):
        raise ValueError(text)
    return keys


def _positive(parse):
    def convert(text: str):
        value = parse(text)
        if not (0 < value < math.inf):
            raise ValueError(text)
        return value
    return convert


def key_value(text: str) -> tuple[str, str]:
    k, eq, v = text.partition("=")
    k = k.strip().lstrip("-")
    if not eq or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", k) or any(c in v for c in "\n\r\x00"):
        raise ValueError(text)
    return k, v


SWEEP_NAME = Domain(f"a named sweep ({', '.join(named_sweeps.SWEEPS)})", _named_sweep)
SLUG = Domain("a simple name: lower-case letters, digits and single '-' inside", _slug_name)
METRIC_KEY = Domain("a dotted path of keys, e.g. test or test.accuracy", _metric_key)
COLUMNS = Domain("comma-separated distinct column names of the sweep", names_list())
ROWS = Domain("comma-separated distinct row names of the sweep", names_list())
MINUTES = Domain("minutes or a SLURM time (M:S, H:M:S, D-H, D-H:M, D-H:M:S), > 0", _positive(parse_minutes))
MEM = Domain("a size such as 16G or 500M, > 0", _positive(parse_mem_gb))
SBATCH = Domain("KEY=VALUE (an sbatch option without its --)", key_value)
WORKERS, THREADS = Int(1, 1024), Int(1, 4096)
DATA_DIR = Domain(EXISTING_DIR.text, PATH.convert)  # existence: checked in main (documented paths need not exist)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="sweep.py", description=first_paragraph(__doc__))
    add(p, "sweep", nargs="?", domain=SWEEP_NAME, help="the sweep to run (or record)")
    add(p, "--command", action="append", default=[], domain=SHELL_COMMAND,
        help="a command of an ad hoc sweep (repeatable; one table row each); needs --name and --seeds")
    add(p, "--label", action="append", default=[], domain=TEXT,
        help="row label of the --command at the same position (default: the command)")
    add(p, "--name", domain=SLUG, help="directory name of an ad hoc sweep under --root (and --results)")
    add(p, "--seeds", domain=SEEDS, help="seeds of an ad hoc sweep; overrides a named sweep's, not a row's own")
    add(p, "--baseline", domain=TEXT, help="ad hoc sweeps: the row label the others are compared with (default: "
        "the first)")
    add(p, "--metric-key", default=["test"], domain=METRIC_KEY, help="ad hoc sweeps: the number's path in "
        "results.json (default: test)")
    p.add_argument("--summary", choices=["mean", "median"], default="mean", help="ad hoc sweeps: mean +- std or "
                   "median [q25:q75] over seeds (default: mean) [mean or median]")
    add(p, "--columns", domain=COLUMNS, help="run only the jobs of these table columns (e.g. \"NLI 100\"); jobs.json "
        "still lists every job, so the table shows the others as not run")
    add(p, "--rows", domain=ROWS, help="run only the jobs of these table rows (e.g. \"BaseModel,DM one-pass\"), in "
        "this order; with --columns, their cells")
    add(p, "--extra-args", default="", domain=SHELL_ARGS, help="arguments appended to every command (e.g. a quick "
        "check: \"--max-epochs 1\"); part of each job's command")
    add(p, "--root", default="runs/sweeps", domain=OUT_DIR, help="sweeps run in <root>/<sweep>/<job id>/ (default: "
        "runs/sweeps)")
    add(p, "--results", default=str(REPO / "results"), domain=OUT_DIR, help="records go to <results>/<sweep>/ "
        "(default: results/ at the repository root)")
    p.add_argument("--record-only", action="store_true", help="record the finished jobs of <root>/<sweep>/ (its "
                   "jobs.json says what ran) in <results>/<sweep>/ and run nothing; with a named sweep or --name")
    add(p, "--data-dir", domain=DATA_DIR, help="appended to every command as --data-dir (checked before anything "
        "runs)")
    add(p, "--device", domain=DEVICE, help="appended to every command as --device")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="run here (default), or as SLURM arrays [local or slurm]")
    add(p, "--workers", default=1, domain=WORKERS, help="local: jobs run at the same time (default: 1)")
    add(p, "--threads-per-job", domain=THREADS, help="OMP/MKL threads per job (default local: max(1, cores // "
        "workers); slurm: --cpus-per-job)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs (and, with slurm, the sbatch "
                   "parameters of each array) and run nothing")
    add(p, "--print-commands", metavar="NAME", domain=SWEEP_NAME, help="print the shell commands of a named sweep "
        "and exit")
    p.add_argument("--by-row", action="store_true", help="with --print-commands: one shell loop over the seeds "
                   "(--seed $S) per row and column")
    g = p.add_argument_group("slurm")
    add(g, "--partition", domain=TEXT, help="SLURM partition")
    add(g, "--time", default=120, domain=MINUTES, help="time limit per job (default: 120 minutes)")
    add(g, "--gpus-per-job", default=0, domain=Int(0, 64), help="GPUs per job (default: 0)")
    add(g, "--cpus-per-job", default=2, domain=THREADS, help="CPUs per job (= its threads; default: 2)")
    add(g, "--mem", domain=MEM, help="memory per job (default: the partition's)")
    add(g, "--array-parallelism", domain=Int(1, 100_000), help="array tasks running at once (default: "
        "submitit's 256)")
    add(g, "--sbatch", action="append", default=[], domain=SBATCH, help="extra sbatch option (repeatable), e.g. "
        "account=myproject")
    g.add_argument("--wait", action="store_true", help="stay until every array task has ended, with progress")
    g.add_argument("--cluster", choices=["slurm", "local"], default="slurm", help="submitit executor: slurm "
                   "(default), or local to run the same arrays as local processes (a check without SLURM; implies "
                   "--wait) [slurm or local]")
    add(p, "--run-job", metavar="JOB_DIR", domain=PATH, help=argparse.SUPPRESS)
    return p


def resolve_sweep(args) -> tuple[str, dict]:
    if args.command:
        if args.sweep:
            raise UsageError("give a named sweep or --command, not both")
        if not args.name or not args.seeds:
            raise UsageError("an ad hoc sweep (--command) needs --name and --seeds")
        sweep = adhoc_sweep(args.command, args.label, args.seeds, args.metric_key, args.summary, args.baseline)
        return args.name, sweep
    if not args.sweep:
        raise UsageError(f"name a sweep ({', '.join(named_sweeps.SWEEPS)}) or give --command")
    return args.sweep, named_sweeps.SWEEPS[args.sweep]


def record_only(name: str, sweep_dir: Path, records_dir: Path, stream=None) -> int:
    """Record every finished job of `sweep_dir` (what its jobs.json says ran) in `records_dir`; run nothing."""
    stream = stream or sys.stdout
    if not (sweep_dir / "jobs.json").is_file():
        raise UsageError(f"--record-only: no jobs.json in {sweep_dir} (give --root where the sweep ran)")
    manifest = read_layout(sweep_dir / "jobs.json")
    if manifest["sweep"] != name:
        raise UsageError(f"{sweep_dir / 'jobs.json'}: a jobs.json of sweep {manifest['sweep']!r}, not {name!r}")
    finished = [j for j in manifest["jobs"] if results_files(sweep_dir / j)]
    ensure_dir(records_dir, "--results")
    write_json_atomic(records_dir / "jobs.json", layout_of(manifest, sweep_dir))
    for jid in finished:
        record_job(manifest, jid, sweep_dir, records_dir)
    stream.write(f"[sweep] {name}: recorded {len(finished)} finished job(s) of {len(manifest['jobs'])} in "
                 f"{records_dir} ({len(manifest['jobs']) - len(finished)} not finished)\n")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_job:
        return run_job(Path(args.run_job).resolve(), args.threads_per_job or 1)
    if args.print_commands:
        print_commands(args.print_commands, named_sweeps.SWEEPS[args.print_commands], str(args.root), args.by_row,
                       str(args.data_dir) if args.data_dir else None)
        return 0
    if args.record_only:  # what ran is in <root>/<name>/jobs.json: the name is enough
        name = args.sweep or args.name
        if not name or args.command or (args.sweep and args.name):
            raise UsageError("--record-only takes a named sweep, or the --name of an ad hoc one (no --command)")
        return record_only(name, Path(args.root).resolve() / name, Path(args.results).resolve() / name)
    name, sweep = resolve_sweep(args)
    sweep_dir = Path(args.root).resolve() / name
    records_dir = Path(args.results).resolve() / name
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: must be {EXISTING_DIR.text}")
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    default_threads = args.cpus_per_job if args.launcher == "slurm" else max(1, cores() // args.workers)
    threads = args.threads_per_job or default_threads
    if args.launcher == "local" and args.workers * threads > cores():
        raise UsageError(f"--workers {args.workers} x --threads-per-job {threads} = {args.workers * threads} "
                         f"threads > {cores()} cores")
    jobs = expand(sweep, sweep_dir, args.seeds if not args.command else None, args.extra_args)
    manifest = {**make_manifest(name, sweep, jobs, sweep_dir, data_dir, args.device), "records": str(records_dir)}
    if args.columns:
        unknown = [c for c in args.columns if c not in sweep["columns"]]
        if unknown:
            raise UsageError(f"--columns: {unknown[0]!r} is not a column of {name} ({', '.join(sweep['columns'])})")
    if args.rows:
        names = [r["name"] for r in sweep["rows"]]
        unknown = [r for r in args.rows if r not in names]
        if unknown:
            raise UsageError(f"--rows: {unknown[0]!r} is not a row of {name} ({', '.join(names)})")
    whole = manifest  # jobs.json lists every job, so the table shows the cells not run here as not run
    if args.columns or args.rows:
        keep = [j for j in jobs if (not args.columns or j["column"] in args.columns)
                and (not args.rows or j["row"] in args.rows)]
        if args.rows:  # in the order the rows were given (stable within a row)
            keep.sort(key=lambda j: args.rows.index(j["row"]))
        jobs = keep
        manifest = {**manifest, "jobs": {j["id"]: manifest["jobs"][j["id"]] for j in jobs}}
    if args.dry_run:
        dry_run(manifest, sweep_dir, args, threads)
        return 0
    for jid, entry in whole["jobs"].items():  # a record made by another command stops us before anything is written
        has_record(records_dir, jid, entry, sweep_dir)
    ensure_dir(records_dir, "--results")
    ensure_dir(sweep_dir, "--root")
    write_json_atomic(sweep_dir / "jobs.json", whole)
    write_json_atomic(records_dir / "jobs.json", layout_of(whole, sweep_dir))
    if args.launcher == "slurm":
        return run_slurm(manifest, sweep_dir, args, threads)
    print(f"[sweep] {name}: {len(jobs)} jobs, {args.workers} at a time, {threads} thread(s) each -> {sweep_dir}; "
          f"records -> {records_dir}")
    return run_local(manifest, sweep_dir, args.workers, threads, records_dir=records_dir)


def run_cli(main, prog: str, argv=None) -> int:
    """main(argv), with bad input as one line on stderr and exit code 2 (shared with table.py)."""
    return _run_cli(main, prog, argv)


def cli(argv=None) -> int:
    return run_cli(main, "sweep.py", argv)


if __name__ == "__main__":
    sys.exit(cli())
