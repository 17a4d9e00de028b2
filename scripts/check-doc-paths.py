#!/usr/bin/env python3
"""Fails when README.md, a file under docs/ or deploy/k8s/README.md names, between
backticks, a repository path that does not exist.

A path here is a backticked word with a slash and a file name extension, or one that
starts with a top-level directory of the repository (`crates/...`, `tests/...`); absolute
paths (the container's /etc/...), URLs and globs are not repository paths. A doc that
names a file that moved sends its reader nowhere, so the check runs with `make lint`."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "deploy/k8s/README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXTENSIONS = (".rs", ".md", ".sh", ".py", ".toml", ".yaml", ".yml", ".json", ".html")
TOP = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
TICKED = re.compile(r"`([^`\s]+)`")
# What commands write (bench-results/, data/): named in docs, never committed.
IGNORED = tuple(
    line.strip().strip("/") + "/"
    for line in (ROOT / ".gitignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)


def is_repository_path(word: str) -> bool:
    if word.startswith(("/", "http:", "https:", "~", "$")) or "*" in word or "<" in word:
        return False
    if "/" not in word or word.startswith(IGNORED):
        return False
    return word.endswith(EXTENSIONS) or word.split("/")[0] in TOP


def main() -> int:
    missing = []
    for doc in DOCS:
        if not doc.exists():
            continue
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for word in TICKED.findall(line):
                # `path:line` and `path#anchor` name a place in a file.
                path = re.split(r"[:#]", word)[0].rstrip("/.,")
                if not is_repository_path(path):
                    continue
                # A doc under deploy/k8s may name paths relative to itself.
                if not (ROOT / path).exists() and not (doc.parent / path).exists():
                    missing.append(f"{doc.relative_to(ROOT)}:{number}: `{word}` does not exist")
    for line in missing:
        print(line, file=sys.stderr)
    if missing:
        print(f"doc paths: {len(missing)} missing", file=sys.stderr)
        return 1
    print("doc paths: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
