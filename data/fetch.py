"""Download the large datasets that are not shipped with the repository, verify them, and unpack them into the
layout the readers in common.py expect.

    python data/fetch.py imdb                  # -> data/imdb/imdb_{train,test}.jsonl          (84 MB download)
    python data/fetch.py eraser_movies         # -> data/eraser_movies/{train,val,test}.jsonl, docs/  (4 MB)
    python data/fetch.py mlqe_pe               # -> data/mlqe_pe/data/{direct-assessments,post-editing}/
    python data/fetch.py all --to /scratch/data

--to defaults to the data/ folder beside this file (where the scripts look by default). Checks:
- imdb: the SHA-256 of aclImdb_v1.tar.gz as published (c40f74a1...), then a conversion of
  aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt into one JSON line per review, negatives then positives,
  each by numeric id (id "<split>/<neg|pos>/<id>_<rating>", text, label 1 = pos, rating);
- mlqe_pe: the SHA-256 of every archive against data/checksums/mlqe_pe.sha256 (the files of the repository
  sheffieldnlp/mlqe-pe at commit 2a670a11, downloaded as GitHub's archive of that commit);
- eraser_movies: the SHA-256 of train/val/test.jsonl against data/checksums/eraser_movies.sha256, computed on
  the copy our results used. We could not check it against ERASER's own archive offline: a mismatch is
  printed as a warning, not an error.
Every flag declares its domain (-h shows it) and is checked before anything is downloaded. Errors (a bad flag,
a --to that is a plain file or lies under one, network, checksum, a damaged archive, a file that is not UTF-8) are
one line on stderr naming what and where, exit code 2, no traceback.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLQE_COMMIT = "2a670a1140416cf80507b5a829659383c878feb8"
SOURCES = {
    "imdb": {"url": "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
             "sha256": "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"},
    "eraser_movies": {"url": "https://www.eraserbenchmark.com/zipped/movies.tar.gz", "sha256": None},
    "mlqe_pe": {"url": f"https://github.com/sheffieldnlp/mlqe-pe/archive/{MLQE_COMMIT}.tar.gz", "sha256": None},
}


class FetchError(Exception):
    """A bad flag, download, archive or file: one line on stderr, exit code 2."""


def one_line(text) -> str:
    return " ".join(str(text).split())


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """`sha256sum` output -> {relative path: hex digest}."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FetchError(f"cannot read the checksums {path}: {e.strerror or e}") from None
    out = {}
    for i, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FetchError(f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x})") from None
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise FetchError(f"{path}:{i}: expected '<sha256>  <path>', got {line.strip()!r}")
            digest, name = parts
            out[name.strip().lstrip("*")] = digest
    return out


def download(url: str, dest: Path, expected: str | None) -> Path:
    print(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
            shutil.copyfileobj(r, f)
    except (OSError, ValueError, http.client.HTTPException) as e:  # ValueError: not a URL
        raise FetchError(f"cannot download {url}: {type(e).__name__}: {one_line(e)}") from None
    got = sha256(dest) if expected is not None else None
    if got != expected:
        raise FetchError(f"checksum mismatch for {url}: expected sha256 {expected}, got {got} "
                         "(incomplete download or a different file)")
    return dest


def unpack(archive: Path, into: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, UnicodeError) as e:
        raise FetchError(f"cannot unpack the download (a damaged or unsupported archive): {type(e).__name__}: "
                         f"{one_line(e)}") from None
    return into


def find_dir(root: Path, name: str) -> Path:
    hits = sorted(p for p in root.rglob(name) if p.is_dir())
    if not hits:
        raise FetchError(f"the archive has no folder named {name!r}")
    return hits[0]


def review_text(path: Path, aclimdb: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        where = f"aclImdb/{path.relative_to(aclimdb)}:{line}"
        raise FetchError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x})") from None


def convert_imdb(aclimdb: Path, out: Path) -> None:
    """aclImdb/{split}/{neg,pos}/<id>_<rating>.txt -> out/imdb_{split}.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = []
        for label, polarity in ((0, "neg"), (1, "pos")):
            files = [(p, re.fullmatch(r"(\d+)_(\d+)\.txt", p.name)) for p in (aclimdb / split / polarity).glob("*.txt")]
            for p, m in sorted(((p, m) for p, m in files if m), key=lambda t: int(t[1].group(1))):
                rows.append({"id": f"{split}/{polarity}/{p.stem}", "text": review_text(p, aclimdb),
                             "label": label, "rating": int(m.group(2))})
        if not rows:
            raise FetchError(f"no reviews under aclImdb/{split}/{{neg,pos}}/")
        with open(out / f"imdb_{split}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"imdb: {len(rows)} {split} reviews -> {out / f'imdb_{split}.jsonl'}")


def check_manifest(root: Path, manifest: dict[str, str], strict: bool) -> None:
    bad = [n for n, d in manifest.items() if not (root / n).is_file() or sha256(root / n) != d]
    if bad and strict:
        raise FetchError(f"{len(bad)} file(s) differ from the checksum list, first: {bad[0]}")
    if bad:
        print(f"warning: {len(bad)} file(s) differ from the copy our results used (first: {bad[0]}); "
              "they may still be a valid copy", file=sys.stderr)
    else:
        print(f"checksums: {len(manifest)} file(s) verified")


def fetch(name: str, to: Path, url: str | None, digest: str | None, manifest: Path | None) -> Path:
    src = SOURCES[name]
    target = to / name
    if target.exists():
        raise FetchError(f"{target} already exists; remove it first to fetch again")
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"--to {to}: cannot create it ({e.strerror or type(e).__name__})") from None
    with tempfile.TemporaryDirectory(dir=to, prefix=f".fetch-{name}-") as tmp:
        tmp = Path(tmp)
        archive = download(url or src["url"], tmp / "archive", digest or src["sha256"])
        root = unpack(archive, tmp / "x")
        staged = tmp / name
        if name == "imdb":
            convert_imdb(find_dir(root, "aclImdb"), staged)
        elif name == "eraser_movies":
            shutil.move(find_dir(root, "movies"), staged)
            check_manifest(staged, read_manifest(manifest or HERE / "checksums" / "eraser_movies.sha256"), strict=False)
        else:
            repo = find_dir(root, "direct-assessments").parent.parent  # <repo>/data/direct-assessments
            (staged / "data").mkdir(parents=True)
            for part in ("direct-assessments", "post-editing"):
                if (repo / "data" / part).is_dir():
                    shutil.move(repo / "data" / part, staged / "data" / part)
            for extra in ("LICENSE", "README.md"):
                if (repo / extra).is_file():
                    shutil.move(repo / extra, staged / extra)
            check_manifest(staged, read_manifest(manifest or HERE / "checksums" / "mlqe_pe.sha256"), strict=True)
        (staged / "SOURCE.txt").write_text(f"Downloaded by data/fetch.py from {url or src['url']}\n")
        shutil.move(staged, target)
    print(f"{name}: ready at {target}")
    return target


def first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n")[0].split())


def domain(text: str, ok):
    """An argparse type: the value if ok(value), else an error naming the domain (shown in --help too)."""
    def convert(value: str):
        try:
            good = ok(value)
        except (ValueError, OSError):
            good = False
        if not good:
            shown = repr(value if len(value) <= 60 else value[:60] + "...")
            raise argparse.ArgumentTypeError(f"must be {text}, got {shown}")
        return value
    convert.__name__ = text
    return convert


def folder_to_create(value: str) -> bool:
    if not value.strip() or value.startswith("~") or "\x00" in value:
        return False
    p = Path(value).absolute()
    while not p.exists() and p.parent != p:  # the nearest existing ancestor: a folder we may write into
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def is_url(value: str) -> bool:
    parts = urllib.parse.urlsplit(value)
    return parts.scheme in ("http", "https", "ftp", "file") and bool(parts.netloc or parts.path) and \
        not any(c.isspace() for c in value)


TO = "a folder that exists or can be created, not under a plain file (no leading ~)"
URL = "a URL: http://, https://, ftp:// or file://"
SHA256 = "64 hexadecimal digits"
CHECKSUMS = "an existing file (no leading ~)"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="fetch.py", description=first_paragraph(__doc__))
    p.add_argument("dataset", choices=[*SOURCES, "all"], help=f"what to fetch [{', '.join([*SOURCES, 'all'])}]")
    p.add_argument("--to", type=domain(TO, folder_to_create), default=str(HERE),
                   help=f"folder that receives <dataset>/ (default: this data/ folder) [{TO}]")
    p.add_argument("--url", type=domain(URL, is_url), help=f"download from this URL instead (a mirror, or a local "
                   f"copy as file://...) [{URL}]")
    p.add_argument("--sha256", type=domain(SHA256, lambda v: re.fullmatch(r"[0-9a-fA-F]{64}", v)),
                   help=f"expected SHA-256 of the downloaded archive (default: the published one, imdb) [{SHA256}]")
    p.add_argument("--checksums", type=domain(CHECKSUMS, lambda v: not v.startswith("~") and Path(v).is_file()),
                   help=f"sha256sum-style list of the unpacked files (default: data/checksums/) [{CHECKSUMS}]")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    to = Path(a.to)
    checksums = Path(a.checksums) if a.checksums else None
    try:
        if a.dataset == "all" and (a.url or a.sha256 or a.checksums):
            raise FetchError("--url, --sha256 and --checksums take one dataset, not 'all'")
        for name in (list(SOURCES) if a.dataset == "all" else [a.dataset]):
            fetch(name, to, a.url, a.sha256.lower() if a.sha256 else None, checksums)
    except FetchError as e:
        print(f"fetch.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused (a full disk, no permission): name the path
        where = f"{e.filename}: " if e.filename else ""
        print(f"fetch.py: error: {where}{one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fetch.py: interrupted; nothing was moved into place", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
