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
Errors (network, checksum, bad archive) are one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
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
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """`sha256sum` output -> {relative path: hex digest}."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise FetchError(f"cannot read the checksums {path}: {e}") from None
    out = {}
    for i, line in enumerate(lines, 1):
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
    except (OSError, ValueError) as e:  # ValueError: not a URL (e.g. a path without file://)
        raise FetchError(f"cannot download {url}: {e}") from None
    got = sha256(dest) if expected is not None else None
    if got != expected:
        raise FetchError(f"checksum mismatch for {url}: expected sha256 {expected}, got {got} "
                         "(incomplete download or a different file)")
    return dest


def unpack(archive: Path, into: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FetchError(f"cannot unpack {archive.name}: {type(e).__name__}: {e}") from None
    return into


def find_dir(root: Path, name: str) -> Path:
    hits = sorted(p for p in root.rglob(name) if p.is_dir())
    if not hits:
        raise FetchError(f"the archive has no folder named {name!r}")
    return hits[0]


def convert_imdb(aclimdb: Path, out: Path) -> None:
    """aclImdb/{split}/{neg,pos}/<id>_<rating>.txt -> out/imdb_{split}.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = []
        for label, polarity in ((0, "neg"), (1, "pos")):
            files = [(p, re.fullmatch(r"(\d+)_(\d+)\.txt", p.name)) for p in (aclimdb / split / polarity).glob("*.txt")]
            for p, m in sorted(((p, m) for p, m in files if m), key=lambda t: int(t[1].group(1))):
                rows.append({"id": f"{split}/{polarity}/{p.stem}", "text": p.read_text(encoding="utf-8"),
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
    to.mkdir(parents=True, exist_ok=True)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fetch.py", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=[*SOURCES, "all"])
    p.add_argument("--to", type=Path, default=HERE, help="folder that receives <dataset>/ (default: this data/ folder)")
    p.add_argument("--url", help="download from this URL instead (a mirror, or a local copy as file://...)")
    p.add_argument("--sha256", help="expected SHA-256 of the downloaded archive (default: the published one, imdb)")
    p.add_argument("--checksums", type=Path, help="sha256sum-style list of the unpacked files (default: data/checksums/)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.dataset == "all" and (a.url or a.sha256 or a.checksums):
        p.exit(2, "fetch.py: error: --url, --sha256 and --checksums take one dataset, not 'all'\n")
    if a.checksums is not None and not a.checksums.is_file():  # before the download, not after it
        p.exit(2, f"fetch.py: error: --checksums {a.checksums}: no such file\n")
    try:
        for name in (list(SOURCES) if a.dataset == "all" else [a.dataset]):
            fetch(name, a.to, a.url, a.sha256, a.checksums)
    except FetchError as e:
        print(f"fetch.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
