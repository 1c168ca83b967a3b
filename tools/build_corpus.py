"""Build the training corpus shipped in resources/corpus/: English prose and Python code from CPython 3.11 itself.

Sources (all under the PSF License 2.0, see resources/corpus/README.md): the reference topics of `pydoc_data.topics`
(the text `help()` shows), the docstrings of the standard library's modules, classes and functions, and blocks of
the standard library's source code (tests and private modules left out). The text is normalised to ASCII lines of
printable characters, split into paragraphs, shuffled deterministically and cut into fixed-size shards at paragraph
boundaries; each shard is written as resources/corpus/<sha256>.txt and listed in resources/corpus/manifest.yaml with
its role (train or eval).

Run once by a maintainer (`python tools/build_corpus.py`); the shards are committed, so no machine rebuilds them and
every machine reads the same bytes. Rebuilding on another CPython patch release may give other shards.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import sys
import sysconfig
import unicodedata
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent.parent / "resources" / "corpus"
SHARD_BYTES = 512 * 1024
TRAIN_SHARDS = 6
EVAL_SHARDS = 1
SEED = "gonka-pipelines corpus v1"


def _ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, whitespace collapsed per line, at least 80 characters."""
    blocks = [re.sub(r"[ \t]+", " ", block).strip() for block in re.split(r"\n\s*\n", _ascii(text))]
    return [block for block in blocks if len(block) >= 80]


def topics() -> list[str]:
    import pydoc_data.topics

    return [p for _, text in sorted(pydoc_data.topics.topics.items()) for p in _paragraphs(text)]


def docstrings() -> list[str]:
    found: list[str] = []
    for path in _public_modules(Path(sysconfig.get_paths()["stdlib"])):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    found.extend(_paragraphs(doc))
    return found


def code() -> list[str]:
    """Blank-line separated blocks of standard-library source, as it is written."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    blocks: list[str] = []
    for path in _public_modules(stdlib):
        text = _ascii(path.read_text(encoding="utf-8", errors="ignore"))
        blocks.extend(block.strip("\n") for block in re.split(r"\n\s*\n", text) if len(block.strip()) >= 80)
    return blocks


def _public_modules(stdlib: Path) -> list[Path]:
    return [path for path in sorted(stdlib.rglob("*.py"))
            if not any(p in ("test", "tests", "idlelib", "lib2to3", "site-packages") or p.startswith("_")
                       for p in path.relative_to(stdlib).parts)]


def main() -> None:
    prose = sorted(set(topics() + docstrings()))
    blocks = sorted(set(code()))
    random.Random(SEED + " code").shuffle(blocks)
    paragraphs = prose + blocks[: 3 * len(prose) // 2]  # about as much code as prose, by bytes
    random.Random(SEED).shuffle(paragraphs)
    shards: list[bytes] = []
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        if size + len(paragraph) + 2 > SHARD_BYTES:
            shards.append(("\n\n".join(current) + "\n").encode())
            current, size = [], 0
            if len(shards) == TRAIN_SHARDS + EVAL_SHARDS:
                break
        current.append(paragraph)
        size += len(paragraph) + 2
    if len(shards) < TRAIN_SHARDS + EVAL_SHARDS:
        sys.exit(f"only {len(shards)} shards of {SHARD_BYTES} bytes: not enough text")
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.txt"):
        old.unlink()
    manifest = []
    for index, shard in enumerate(shards):
        digest = hashlib.sha256(shard).hexdigest()
        (OUT / f"{digest}.txt").write_bytes(shard)
        role, number = ("train", index) if index < TRAIN_SHARDS else ("eval", index - TRAIN_SHARDS)
        manifest.append({"hash": digest, "bytes": len(shard), "role": role, "name": f"{role}-{number}"})
    header = (f"# Built by tools/build_corpus.py from CPython {sys.version.split()[0]}'s documentation and standard-library "
              "source (PSF License 2.0).\n"
              "# Each shard is <hash>.txt beside this file; a training task names shards by hash.\n")
    (OUT / "manifest.yaml").write_text(header + yaml.safe_dump({"shards": manifest}, sort_keys=False))
    print(f"{len(paragraphs)} paragraphs; wrote {len(shards)} shards, {sum(len(s) for s in shards):,} bytes")


if __name__ == "__main__":
    main()
