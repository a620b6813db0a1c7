#!/usr/bin/env python3
"""check_scripts.py -- every copy of each published Lua script is the same
text, byte for byte.

PROTOCOL.md publishes the scripts every peer runs: the reply script
(section 3) and the priority push script (section 7, "priority").  The C
library, the Ruby, Python and Node peers (and, of the reply script, the
reference server) each carry a copy, since each is installed on its own.  A
copy that drifts still works against its own tests but hashes to another
SHA-1, and a peer then pushes with a script the others do not know -- so
this reads every copy as its language writes it (a fenced ```lua block,
adjacent C string literals, a Python string, a JS template literal, a Ruby
constant, read by Ruby itself) and fails on any difference.  A copy it
cannot find or read is a failure, not a skip, as is a copy that does not
start with the script's first line; and any other C file under src/ that
holds that line must hold the same script.

Usage: check_scripts.py [ROOT]
"""
import ast
import pathlib
import re
import subprocess
import sys


def markdown(path, first):
    """The fenced lua block that starts with FIRST."""
    for block in re.findall(r"```lua\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
        if block.startswith(first):
            return block
    return None


def c_literal(text, first):
    """The adjacent C string literals of the initializer that holds FIRST,
    concatenated and decoded."""
    at = text.find(first)
    if at < 0:
        return None
    start = max(text.rfind("=", 0, at), text.rfind("(", 0, at), text.rfind(",", 0, at))
    m = re.match(r'\s*((?:"(?:[^"\\\n]|\\.)*"\s*)+)', text[start + 1:])
    if not m:
        return None
    parts = re.findall(r'"((?:[^"\\\n]|\\.)*)"', m.group(1))
    return "".join(ast.literal_eval('"%s"' % p) for p in parts)


def c_file(path, first):
    return c_literal(path.read_text(encoding="utf-8"), first)


def python(name):
    """The string assigned to NAME at any level of a Python file."""

    def read(path, first):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                return ast.literal_eval(node.value)
        return None

    return read


def js(name):
    """The template literal `const NAME = ...`: line continuations are
    dropped (as JS does); other escapes or a substitution are not read."""

    def read(path, first):
        m = re.search(r"const %s = `([^`]*)`" % name, path.read_text(encoding="utf-8"))
        if not m:
            return None
        body = m.group(1).replace("\\\n", "")
        return None if "\\" in body or "${" in body else body

    return read


def ruby(constant):
    """CONSTANT once Ruby has loaded the file (a squiggly heredoc strips
    indentation: Ruby reads it, not a regex)."""

    def read(path, first):
        prog = "load ARGV[0]; print Object.const_get(ARGV[1])"
        r = subprocess.run(["ruby", "-rdigest", "-rset", "-e", prog, str(path), constant],
                           capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    return read


SCRIPTS = [
    ("reply script", "-- rrpc reply v2:", [
        ("docs/PROTOCOL.md", markdown),
        ("src/core/protocol.c", c_file),
        ("clients/python/src/rrpc/transport.py", python("REPLY_SCRIPT")),
        ("tests/vectors/reference_server.py", python("REPLY_SCRIPT")),
        ("clients/node/lib/transport.js", js("REPLY_SCRIPT")),
        ("clients/ruby/lib/rrpc/replies.rb", ruby("RRPC::Replies::REPLY_SCRIPT")),
    ]),
    ("priority script", "local p = ARGV[#ARGV]", [
        ("docs/PROTOCOL.md", markdown),
        ("src/core/priority.c", c_file),
        ("clients/python/src/rrpc/priority.py", python("PRIORITY_SCRIPT")),
        ("clients/node/lib/priority.js", js("PRIORITY_SCRIPT")),
        ("clients/ruby/lib/rrpc/priority.rb", ruby("RRPC::Priority::PRIORITY_SCRIPT")),
    ]),
]


def check(root, name, first, readers):
    """The problems of one script's copies (none: all equal)."""
    copies = {rel: read(root / rel, first) for rel, read in readers}
    for path in sorted((root / "src").rglob("*.[ch]")):
        rel = str(path.relative_to(root))
        if rel not in copies and first in path.read_text(encoding="utf-8", errors="replace"):
            copies[rel] = c_file(path, first)
    problems = []
    # Against PROTOCOL.md's, or the first copy read when it has none.
    want_from, want = next(((r, t) for r, t in copies.items() if t is not None), (None, None))
    for rel, got in copies.items():
        if got is None:
            problems.append(f"{rel}: cannot find or read the {name}")
        elif not got.startswith(first):
            problems.append(f"{rel}: its {name} does not start with {first!r}")
        elif got != want:
            problems.append(f"{rel}: its {name} differs from {want_from}'s:\n--- {want_from}\n"
                            f"{want}--- {rel}\n{got}")
    print(f"{name}: {len(copies)} copies, " +
          ("all equal" if not problems else f"{len(problems)} wrong") + ": " + ", ".join(copies))
    return problems


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                        pathlib.Path(__file__).resolve().parents[2])
    problems = []
    for name, first, readers in SCRIPTS:
        problems += check(root, name, first, readers)
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
