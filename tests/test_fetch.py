"""data/fetch.py against a local HTTP server on 127.0.0.1 serving tiny archives in the published layouts (never a
real host): download, checksum, unpack, convert, and the readers of common.py on the result."""
import functools
import hashlib
import http.server
import io
import sys
import tarfile
import threading
from pathlib import Path

import pytest

import common
import smat_jax_free as sm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data"))
import fetch  # noqa: E402


def tar_gz(path: Path, files: dict[str, str]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_imdb_download_verify_convert_and_read(server, tmp_path):
    www, url = server
    files = {"aclImdb/train/neg/10_2.txt": "bad.<br /><br />Very bad.", "aclImdb/train/neg/2_1.txt": "awful",
             "aclImdb/train/pos/0_9.txt": "great film", "aclImdb/test/neg/0_3.txt": "meh",
             "aclImdb/test/pos/1_10.txt": "wonderful", "aclImdb/README": "x"}
    digest = tar_gz(www / "aclImdb_v1.tar.gz", files)
    out = tmp_path / "data"
    assert fetch.main(["imdb", "--to", str(out), "--url", f"{url}/aclImdb_v1.tar.gz", "--sha256", digest]) == 0
    train = common.read_imdb(out, "train")
    assert [e["id"] for e in train] == ["train/neg/2_1", "train/neg/10_2", "train/pos/0_9"]  # neg, pos; numeric ids
    assert [e["label"] for e in train] == [0, 0, 1] and train[1]["text"] == "bad. Very bad."
    assert len(common.read_imdb(out, "test")) == 2 and not list(out.glob(".fetch-*"))


def test_bad_checksum_is_one_line_exit_2_and_leaves_nothing(server, tmp_path, capsys):
    www, url = server
    tar_gz(www / "a.tar.gz", {"aclImdb/train/neg/0_1.txt": "x"})
    out = tmp_path / "data"
    assert fetch.main(["imdb", "--to", str(out), "--url", f"{url}/a.tar.gz"]) == 2  # the published checksum
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum mismatch" in err[0]
    assert not (out / "imdb").exists() and not list(out.glob(".fetch-*"))
    assert fetch.main(["imdb", "--to", str(out), "--url", f"{url}/missing.tar.gz"]) == 2
    assert "cannot download" in capsys.readouterr().err


def test_bad_url_and_checksum_list_are_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as e:  # no scheme: refused at parsing
        fetch.main(["imdb", "--to", str(out), "--url", "not/a/url.tar.gz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--url: must be a URL" in err[0] and "not/a/url.tar.gz" in err[0]
    assert fetch.main(["imdb", "--to", str(out), "--url", "file:///no/such/archive.tar.gz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download file:///no/such/archive.tar.gz" in err[0]
    with pytest.raises(SystemExit) as e:  # checked before anything is downloaded
        fetch.main(["eraser_movies", "--to", str(out), "--checksums", str(tmp_path / "none.sha256")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and \
        err[0].startswith("fetch.py: error: argument --checksums: must be an existing file (no leading ~), got '/")
    bad = tmp_path / "bad.sha256"
    bad.write_text("0123abcd\n")
    with pytest.raises(fetch.FetchError, match=r"bad.sha256:1: expected '<sha256>  <path>'"):
        fetch.read_manifest(bad)
    assert not out.exists() or not list(out.iterdir())


def test_eraser_and_mlqe_layouts_and_checksum_lists(server, tmp_path, capsys):
    www, url = server
    doc = "a great film .\nreally great ."
    ann = ('{"annotation_id": "posR_000.txt", "classification": "POS", '
           '"evidences": [[{"start_token": 1, "end_token": 3}]]}\n')
    tar_gz(www / "movies.tar.gz", {f"movies/{s}.jsonl": ann for s in ("train", "val", "test")} |
           {"movies/docs/posR_000.txt": doc})
    out = tmp_path / "data"
    assert fetch.main(["eraser_movies", "--to", str(out), "--url", f"{url}/movies.tar.gz"]) == 0
    assert "differ from the copy our results used" in capsys.readouterr().err  # a warning, not an error
    assert common.read_eraser_movies(out, "test")[0]["evidence"] == [0, 1, 1, 0, 0, 0, 0]

    tsv = ("index\toriginal\ttranslation\tscores\tmean\tz_scores\tz_mean\tmodel_scores\n"
           "0\ta\tb\t[1]\t1\t[0.5]\t0.5\t0.1\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    members = {}
    for split in ("train", "dev", "test"):
        for pair in sm.MLQE_PAIRS:
            tar_gz(inner / f"{pair}-{split}.tar.gz", {f"{pair}-{split}/{split}.{pair}.df.short.tsv": tsv})
            members[f"data/direct-assessments/{split}/{pair}-{split}.tar.gz"] = inner / f"{pair}-{split}.tar.gz"
    with tarfile.open(www / "mlqe.tar.gz", "w:gz") as tar:
        for name, path in members.items():
            tar.add(path, arcname=f"mlqe-pe-abc/{name}")
    sums = tmp_path / "mlqe.sha256"
    sums.write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {n}\n" for n, p in members.items()))
    assert fetch.main(["mlqe_pe", "--to", str(out), "--url", f"{url}/mlqe.tar.gz", "--checksums", str(sums)]) == 0
    assert len(sm.read_mlqe_pe(out, "dev")) == len(sm.MLQE_PAIRS)
    sums.write_text(sums.read_text().replace(sums.read_text()[:8], "00000000", 1))
    assert fetch.main(["mlqe_pe", "--to", str(tmp_path / "d2"), "--url", f"{url}/mlqe.tar.gz",
                       "--checksums", str(sums)]) == 2
    assert "differ from the checksum list" in capsys.readouterr().err
