"""Scenarios around a run, not inside it: a run killed by SIGKILL, SIGTERM or SIGINT and run again, two runs of one
name at once, a finished run whose directory is partly read-only replaced, a C locale with non-ASCII paths. Each
scenario checks what is left on disk: never a half-written results.json, a stale lock taken over, a held lock named
in the second run's one-line error, nothing of an earlier run removed when it cannot all be removed.

The scripts run as real processes on a tiny random model and tiny data (`slow`); the run-directory claim and
run_cli() are also tested in-process (fast), where a read-only folder is simulated when the tests run as root (root
may write into any folder, so chmod cannot make one read-only for it).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_tiny_esnli, write_tiny_snips
from test_regex import write_tiny_text_data
from test_smat import write_tiny_eraser, write_tiny_imdb

import common

ROOT = Path(__file__).resolve().parents[1]
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


# ---------------------------------------------------------------------------------------------- the claim, in-process
def holder(lock: Path) -> subprocess.Popen:
    """Another process holding `lock` as claim_dir() does (flock), until killed."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()} otherhost'.encode()); print('held', "
            "flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_held_lock_is_one_error_naming_the_lock_file_and_is_taken_over_once_its_holder_dies(tmp_path):
    d = tmp_path / "script" / "run"
    d.parent.mkdir()
    lock = d.parent / ".run.lock"
    p = holder(lock)
    try:
        with pytest.raises(common.UsageError, match=f"in use by another run \\(lock file {lock}, held by process "
                                                    f"{p.pid} otherhost\\)"):
            common.claim_dir(d)
        assert not d.exists() and lock.exists()
    finally:
        p.kill()
        p.wait()
    assert lock.read_text() == f"{p.pid} otherhost"  # SIGKILL: the file stays, the kernel dropped the lock
    assert common.claim_dir(d) == d and lock.read_text() == f"{os.getpid()} {common._hostname()}"
    common.release_run_dir(d)
    assert not lock.exists() and d.is_dir()


def test_a_stale_lock_file_without_a_holder_is_taken_over_and_an_earlier_run_replaced_whole(tmp_path):
    d = tmp_path / "s" / "run"
    (d / "model").mkdir(parents=True)
    (d / "results.json").write_text("{}")
    (d / "model" / "x.safetensors").write_bytes(b"1")
    os.chmod(d / "results.json", 0o444)  # read-only files in writable folders are removed as usual
    (d.parent / ".run.lock").write_text("999999999 " + common._hostname())  # a dead process's lock
    assert common.claim_dir(d) == d and list(d.iterdir()) == []
    common.release_run_dir(d)


def read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` read-only: chmod, and for root (who may write anyway) os.access answers as for a user."""
    folder.chmod(0o555)
    if ROOT_USER:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: real(p, mode, **kw) and not (
            mode & os.W_OK and Path(p).resolve() == folder.resolve()))


def test_an_earlier_run_that_cannot_be_removed_is_left_whole_and_named(tmp_path, monkeypatch):
    d = tmp_path / "s" / "run"
    (d / "model").mkdir(parents=True)
    (d / "results.json").write_text('{"test": 0.5}\n')
    (d / "model" / "head.safetensors").write_bytes(b"x")
    read_only(monkeypatch, d / "model")
    try:
        with pytest.raises(common.UsageError, match=f"cannot remove the earlier run in {d}: the folder {d / 'model'} "
                                                    "is read-only \\(nothing was removed"):
            common.claim_dir(d)
        assert (d / "results.json").read_text() == '{"test": 0.5}\n' and (d / "model" / "head.safetensors").exists()
        assert not (d.parent / ".run.lock").exists()  # the failed claim released its lock
    finally:
        (d / "model").chmod(0o755)


def test_a_lock_that_cannot_be_created_and_a_folder_under_a_file_are_one_line_each(tmp_path, monkeypatch):
    scripts = tmp_path / "out" / "script"
    scripts.mkdir(parents=True)
    if ROOT_USER:  # root creates files in read-only folders: the refusal is simulated where the lock is opened
        real = os.open

        def refuse(path, *a, **kw):
            if str(path).endswith(".lock"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *a, **kw)
        monkeypatch.setattr(os, "open", refuse)
    else:
        scripts.chmod(0o555)
    try:
        with pytest.raises(common.UsageError, match=f"cannot create lock file {scripts / '.run.lock'} for run "
                                                    f"directory {scripts / 'run'}: Permission denied"):
            common.claim_dir(scripts / "run")
    finally:
        scripts.chmod(0o755)
    monkeypatch.undo()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(common.UsageError, match="cannot create the folder .*plain/script for run directory run"):
        common.make_run_dir(tmp_path / "plain", "script", "run")
    os.symlink(tmp_path, tmp_path / "out" / "script" / "link")
    with pytest.raises(common.UsageError, match="link to make the run directory: it is a symbolic link"):
        common.claim_dir(tmp_path / "out" / "script" / "link")
    assert (tmp_path / "plain").read_text() == "x" and (tmp_path / "out").is_dir()


def test_run_cli_one_line_for_signals_os_errors_and_control_characters(tmp_path, capfd):
    """SIGTERM and Ctrl-C stop with one line (143, 130); an OSError is one line naming the path; a message's line
    breaks and escape sequences are escaped; a live progress bar is closed first; claimed directories are released."""
    from tqdm import tqdm

    def main_term(_):
        common.claim_dir(tmp_path / "s" / "run")
        bar = iter(tqdm(range(3), disable=False, leave=True))  # a bar in the middle of its loop, as in training
        next(bar)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this returns

    def main_oserror(_):
        open(tmp_path / "no" / "such" / "file.json", "w")

    def main_message(_):
        raise common.UsageError("a\nb\x1b[2J\u2028c")

    def main_interrupt(_):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    for main, code, line in ((main_term, 143, "terminated (SIGTERM)"), (main_interrupt, 130, "interrupted (Ctrl-C)"),
                             (main_oserror, 2, f"{tmp_path}/no/such/file.json: No such file or directory"),
                             (main_message, 2, "a\\nb\\x1b[2J\\u2028c")):
        capfd.readouterr()
        assert common.run_cli(main, lambda argv: None, []) == code
        err = capfd.readouterr().err
        shown = [seg.split("\r")[-1] for seg in err.split("\n")]  # what a terminal shows: \r returns to the start
        assert line in err and len([x for x in shown if x.strip()]) == 1, err
    assert not (tmp_path / "s" / ".run.lock").exists() and not common._CLAIMED
    assert signal.getsignal(signal.SIGTERM) == before  # the handler does not outlive run_cli()


# ------------------------------------------------------------------------------------------ the scripts, as processes
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scenario-data")
    write_tiny_snips(d)
    write_tiny_esnli(d)
    write_tiny_text_data(d)
    write_tiny_imdb(d)
    write_tiny_eraser(d)
    return d


LONG = ["--max-epochs", "100000", "--patience", "100000"]  # still training when the signal comes
SCRIPTS = {  # script, its arguments besides --out-dir, the run directory under --out-dir
    "im": ("uimer_im.py", lambda m, d: ["--model", m, "--data-dir", str(d), "--eval-batch-size", "64"],
           "uimer_im/ic-1shot-uniform-55"),
    "rx": ("regex_robust.py", lambda m, d: ["--model", m, "--data-dir", str(d), "--train-size", "12", "--no-egt",
                                            "--attributions", "random", "--no-randomization"],
           "regex_robust/sst2-12-vat-1"),
    "sm": ("smat_jax_free.py", lambda m, d: ["--setup", "teacher", "--task", "imdb", "--model", m, "--data-dir", str(d),
                                             "--imdb-split-sizes", "40,10,20", "--max-len", "24", "--eval-batch-size",
                                             "16"], "smat_jax_free/imdb-teacher"),
}


def argv(key: str, model: str, d: Path, out: Path, *extra: str) -> list[str]:
    script, args, _ = SCRIPTS[key]
    return [sys.executable, str(ROOT / script), *args(model, d), "--out-dir", str(out), "--device", "cpu", *extra]


def run(key, model, d, out, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(argv(key, model, d, out, *extra), capture_output=True, text=True, timeout=600,
                          env=env or ENV, cwd=out.parent)


def _default_sigint() -> None:
    # a suite started in the background (`pytest &`, nohup) inherits SIGINT ignored, and Python then keeps ignoring
    # it; the run must see Ctrl-C as a user's terminal sends it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(key, model, d, out, *extra) -> subprocess.Popen:
    return subprocess.Popen(argv(key, model, d, out, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=out.parent,  # stdout (a line per epoch) would fill a pipe
                            preexec_fn=_default_sigint)


def run_dir(key: str, out: Path) -> Path:
    return out / SCRIPTS[key][2]


def wait_training(p: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    """Until the run has logged a training step (claimed, model loaded, training), or fail if it ended."""
    end = time.time() + timeout
    while time.time() < end:
        assert p.poll() is None, f"ended early ({p.returncode}): {p.stderr.read()[-2000:]}"
        if any(f.stat().st_size > 0 for f in out.rglob("log.jsonl")):
            return
        time.sleep(0.1)
    p.kill()
    raise AssertionError("the run never started training")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_no_partial_results(out: Path) -> None:
    for f in out.rglob("results.json"):  # complete and strict (no NaN), or absent
        text = f.read_text()
        json.loads(text, parse_constant=lambda c, where=f: pytest.fail(f"{where}: {c}"))


@pytest.fixture(scope="module")
def reference(tiny_model, data, tmp_path_factory):
    """One clean short run per script: its results.json bytes and its files, to compare reruns with."""
    cache = {}

    def get(key):
        if key not in cache:
            out = tmp_path_factory.mktemp(f"ref-{key}") / "runs"
            p = run(key, tiny_model, data, out, "--max-epochs", "1")
            assert p.returncode == 0, p.stderr
            d = run_dir(key, out)
            cache[key] = ((d / "results.json").read_bytes(), sorted(f.name for f in d.iterdir()),
                          len((d / "log.jsonl").read_text().splitlines()))
        return cache[key]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("key,sig", [("im", signal.SIGKILL), ("im", signal.SIGTERM), ("im", signal.SIGINT),
                                     ("rx", signal.SIGTERM), ("sm", signal.SIGKILL)],
                         ids=lambda v: v.name if isinstance(v, signal.Signals) else v)
def test_a_killed_run_leaves_no_results_and_its_rerun_replaces_it(key, sig, tiny_model, data, tmp_path, reference):
    out = tmp_path / "runs"
    p = start(key, tiny_model, data, out, *LONG)
    wait_training(p, out)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    d = run_dir(key, out)
    lock = d.parent / f".{d.name}.lock"
    assert (d / "config.json").is_file() and not (d / "results.json").exists()
    assert_no_partial_results(out)
    if sig == signal.SIGKILL:  # nothing ran: the lock file stays, with the dead process in it
        assert p.returncode == -signal.SIGKILL and lock.read_text().split()[0] == str(p.pid)
    else:
        code, what = {signal.SIGTERM: (143, "terminated (SIGTERM)"), signal.SIGINT: (130, "interrupted (Ctrl-C)")}[sig]
        lines = error_lines(err)
        assert p.returncode == code and len(lines) == 1 and what in lines[0] and "Traceback" not in err, err
        assert lines[0].startswith(f"{SCRIPTS[key][0]}: error: ") and not lock.exists()
    (d / "stale-file-of-the-killed-run").write_text("x")
    again = run(key, tiny_model, data, out, "--max-epochs", "1")
    assert again.returncode == 0, again.stderr
    results, files, n_log = reference(key)
    assert (d / "results.json").read_bytes() == results  # same seed, same bytes: nothing of the killed run leaked
    assert sorted(f.name for f in d.iterdir()) == files and len((d / "log.jsonl").read_text().splitlines()) == n_log
    assert not lock.exists()


@pytest.mark.slow
@pytest.mark.parametrize("key", ["im", "sm"])
def test_two_runs_of_one_name_one_gets_the_lock_error(key, tiny_model, data, tmp_path):
    out = tmp_path / "runs"
    a, pair = start(key, tiny_model, data, out, *LONG), []
    try:
        wait_training(a, out)
        d = run_dir(key, out)
        b = run(key, tiny_model, data, out, "--max-epochs", "1")
        lines = error_lines(b.stderr)
        assert b.returncode == 2 and len(lines) == 1 and "Traceback" not in b.stderr, b.stderr
        assert f"run directory {d} is in use by another run (lock file {d.parent / ('.' + d.name + '.lock')}, " \
               f"held by process {a.pid} " in lines[0]
        assert a.poll() is None and (d / "config.json").is_file() and (d / "log.jsonl").stat().st_size > 0
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=120) == 143
        if key == "im":  # both at once: exactly one claims the directory, the other stops with the lock error
            pair = [start(key, tiny_model, data, out, *LONG) for _ in range(2)]
            end = time.time() + 300
            while time.time() < end and all(p.poll() is None for p in pair):
                time.sleep(0.1)
            lost = [p for p in pair if p.poll() is not None]
            won = [p for p in pair if p.poll() is None]
            assert len(lost) == 1 and len(won) == 1, [p.poll() for p in pair]
            _, err = lost[0].communicate()
            assert lost[0].returncode == 2 and "is in use by another run (lock file" in err and \
                len(error_lines(err)) == 1, err
            wait_training(won[0], out)
            won[0].send_signal(signal.SIGTERM)
            assert won[0].wait(timeout=120) == 143
    finally:
        for p in [a, *pair]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert_no_partial_results(out)
    assert not list(out.rglob(".*.lock"))


@pytest.mark.slow
@pytest.mark.parametrize("key", ["im", "rx"])
def test_a_finished_run_with_a_read_only_folder(key, tiny_model, data, tmp_path):
    """A user (not root) cannot replace a run holding a folder they made read-only: one line naming the folder, and
    the earlier run stays whole; made writable again, it is replaced. Root may write anywhere: it is replaced."""
    out = tmp_path / "runs"
    save = ["--save-model"] if key == "im" else []  # REGEX saves its model by default
    first = run(key, tiny_model, data, out, "--max-epochs", "1", *save)
    assert first.returncode == 0, first.stderr
    d = run_dir(key, out)
    before = (d / "results.json").read_bytes()
    (d / "model").chmod(0o555)
    try:
        again = run(key, tiny_model, data, out, "--max-epochs", "1", *save)
        if ROOT_USER:
            assert again.returncode == 0, again.stderr
        else:
            lines = error_lines(again.stderr)
            assert again.returncode == 2 and len(lines) == 1 and "Traceback" not in again.stderr, again.stderr
            assert f"cannot remove the earlier run in {d}: the folder {d / 'model'} is read-only" in lines[0]
            assert (d / "results.json").read_bytes() == before and (d / "model" / "config.json").is_file()
            assert not (d.parent / f".{d.name}.lock").exists()
            (d.parent).chmod(0o555)  # the script folder read-only: the lock cannot be created
            try:
                third = run(key, tiny_model, data, out, "--max-epochs", "1", *save)
            finally:
                d.parent.chmod(0o755)
            assert third.returncode == 2 and len(error_lines(third.stderr)) == 1, third.stderr
            assert f"cannot create lock file {d.parent / ('.' + d.name + '.lock')}" in third.stderr
    finally:
        (d / "model").chmod(0o755)
    final = run(key, tiny_model, data, out, "--max-epochs", "1", *save)
    assert final.returncode == 0, final.stderr
    assert (d / "results.json").read_bytes() == before  # replaced by the same run: same bytes
    assert_no_partial_results(out)


# ---------------------------------------------------------------------------------------------- locales
@pytest.mark.slow
@pytest.mark.parametrize("key", ["im", "sm"])
def test_c_locale_with_non_ascii_paths(key, tiny_model, data, tmp_path, reference):
    """LC_ALL=C with PYTHONIOENCODING unset: Python (>= 3.7) then runs in its UTF-8 mode (PEP 538/540), so a
    non-ASCII --out-dir works, --save-model (safetensors, tokenizers) and torch.save included, with the same
    results.json bytes as under a UTF-8 locale. With the UTF-8 mode switched off (PYTHONUTF8=0) the file system
    encoding is ASCII and the Rust/C++ savers refuse such a path: the run stops at once with one line saying why."""
    env = {k: v for k, v in ENV.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LANGUAGE")
           and not k.startswith("LC_")}
    env["LC_ALL"] = "C"
    code = "import sys; print(sys.flags.utf8_mode, sys.getfilesystemencoding())"
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert probe.stdout.split() == ["1", "utf-8"], probe.stdout  # what really happens under LC_ALL=C
    out = tmp_path / "r\u00fcns-\u8fd0\u884c"
    save = ["--save-model"] if key == "im" else []
    p = run(key, tiny_model, data, out, "--max-epochs", "1", *save, env=env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    d = run_dir(key, out)
    assert (d / "results.json").read_bytes() == reference(key)[0]
    if key == "im":
        from transformers import AutoModel, AutoTokenizer
        assert AutoModel.from_pretrained(d / "model").config.hidden_size == 32
        assert AutoTokenizer.from_pretrained(d / "model")("a b")["input_ids"][0] == 101
    else:
        assert (d / "teacher.pt").stat().st_size > 0
    env["PYTHONUTF8"] = "0"
    p = run(key, tiny_model, data, tmp_path / "zw\u00e9i", "--max-epochs", "1", *save, env=env)
    lines = error_lines(p.stderr)
    assert p.returncode == 2 and len(lines) == 1 and "is not ASCII" in lines[0] and "PYTHONUTF8=1" in lines[0], \
        p.stderr
    assert not (tmp_path / "zw\u00e9i").exists()
