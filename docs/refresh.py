"""Refill docs/walkthrough.md's output blocks from fresh runs.

Run: python docs/refresh.py [--check]. Each block between
<!-- begin: NAME --> and <!-- end: NAME --> holds the real output of one
command; --check exits 1 when any block differs (tests/test_docs.py).
"""

import contextlib
import io
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sim.cli import main  # noqa: E402

DOC = os.path.join(ROOT, "docs", "walkthrough.md")
COMMANDS = {
    "demo": ["demo"],
    "run-stall": ["run", "dataplane-stall"],
    "explain": ["explain", "dataplane-stall"],
    "compare": ["compare", "dataplane-stall", "dataplane-fixed"],
    "run-fixed-tail": ["run", "dataplane-fixed"],
}


def output(name: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(COMMANDS[name])
    out = buf.getvalue()
    if name == "run-fixed-tail":
        out = "...\n" + out[out.index("--- slofsim summary"):]
    return out.rstrip()


def blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).rstrip() for m in
            re.finditer(r"<!-- begin: ([\w-]+) -->\n```text\n(.*?)```\n<!-- end: \1 -->", text, re.S)}


def refresh(check: bool) -> int:
    text = open(DOC).read()
    stale = [name for name, body in blocks(text).items() if body != output(name)]
    if check:
        for name in stale:
            print(f"{DOC}: block {name!r} differs from `slofsim {' '.join(COMMANDS[name])}`")
        return 1 if stale else 0
    for name in COMMANDS:
        block = f"<!-- begin: {name} -->\n```text\n{output(name)}\n```\n<!-- end: {name} -->"
        text, n = re.subn(rf"<!-- begin: {name} -->.*?<!-- end: {name} -->", lambda m: block, text, flags=re.S)
        if n != 1:
            raise SystemExit(f"{DOC}: expected one block {name!r}, found {n}")
    with open(DOC, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(refresh("--check" in sys.argv[1:]))
