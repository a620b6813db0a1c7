#!/usr/bin/env python3
"""check_scripts.py -- every copy of a published Lua script is the same text.

PROTOCOL.md publishes the scripts a peer must run byte for byte (the reply
script of section 3), and the C library, the Ruby, Python and Node peers
and the reference server each carry a copy, since each is installed on its
own.  A copy that drifts still works against its own tests but hashes to
another SHA-1, and a peer then pushes with a script the others do not know
-- so this reads the literal out of every file, in the language's own
quoting, and fails on any difference.  Usage: check_scripts.py ROOT
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

MARK = "-- rrpc reply v2:"


def from_markdown(text):
    for block in re.findall(r"```lua\n(.*?)```", text, re.S):
        if block.startswith(MARK):
            return block
    return None


def from_c(text):
    m = re.search(r"rrpc__reply_script\[\]\s*=\s*((?:\s*\"(?:[^\"\\]|\\.)*\")+)\s*;", text)
    if not m:
        return None
    pieces = re.findall(r"\"((?:[^\"\\]|\\.)*)\"", m.group(1))
    escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
    out = []
    for p in pieces:
        out.append(re.sub(r"\\(.)", lambda e: escapes[e.group(1)], p))
    return "".join(out)


def from_python(text):
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "REPLY_SCRIPT" for t in node.targets
        ):
            return node.value.value
    return None


def from_js(text):
    m = re.search(r"const REPLY_SCRIPT = `([^`]*)`", text)
    if not m or "\\" in m.group(1) or "${" in m.group(1):
        return None  # escapes or interpolation: this reader would misread it
    return m.group(1)


def from_ruby(path):
    # Ruby's squiggly heredoc strips indentation: let Ruby read it.
    prog = (
        "load ARGV[0]; "
        "print RRPC.const_get(:Replies).const_get(:REPLY_SCRIPT)"
    )
    r = subprocess.run(["ruby", "-e", prog, str(path)], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def main():
    root = Path(sys.argv[1])
    readers = [
        ("docs/PROTOCOL.md", from_markdown),
        ("src/core/protocol.c", from_c),
        ("clients/python/src/rrpc/transport.py", from_python),
        ("tests/vectors/reference_server.py", from_python),
        ("clients/node/lib/transport.js", from_js),
    ]
    copies = {}
    for rel, read in readers:
        copies[rel] = read((root / rel).read_text(encoding="utf-8"))
    copies["clients/ruby/lib/rrpc/replies.rb"] = from_ruby(root / "clients/ruby/lib/rrpc/replies.rb")
    bad = 0
    want = copies["docs/PROTOCOL.md"]
    if not want or not want.startswith(MARK):
        print("docs/PROTOCOL.md: no lua block starting with %r" % MARK)
        return 1
    for rel, got in copies.items():
        if got is None:
            print("%s: cannot find the reply script" % rel)
            bad += 1
        elif got != want:
            print("%s: its reply script differs from PROTOCOL.md's" % rel)
            bad += 1
    print("reply script: %d copies, %s" % (len(copies), "all equal" if not bad else "%d wrong" % bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
