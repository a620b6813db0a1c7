#!/usr/bin/env python3
"""check_layers.py -- the layers of src/ hold (docs/DESIGN.md, "Where things are").

Reads the quoted #includes of every file in src/, tools/ and examples/ and
fails if
  * a layer includes a layer it may not: core/ nothing but core/; transport/
    core/; a broker's folder (redis/, amqp/) core/, transport/ and itself; client/ and
    server/ core/ and transport/ only -- never a broker's folder;
  * the CLI or an example includes anything of src/ (public header only);
  * modules depend on each other in a circle (a module is a file name
    without .c/.h; X depends on Y when a file of X includes Y's header).
Usage: check_layers.py [REPO]   (default: two folders above this file)
"""
import os
import re
import sys

ALLOWED = {
    "core": {"core"},
    "transport": {"core", "transport"},
    "redis": {"core", "transport", "redis"},
    "amqp": {"core", "transport", "amqp"},
    "client": {"core", "transport", "client"},
    "server": {"core", "transport", "server"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    src = os.path.join(repo, "src")
    problems = []
    deps = {}  # module -> set of modules
    for layer in sorted(os.listdir(src)):
        folder = os.path.join(src, layer)
        if not os.path.isdir(folder):
            problems.append(f"src/{layer}: a file outside the layer folders")
            continue
        if layer not in ALLOWED:
            problems.append(f"src/{layer}/: a folder no rule knows (add it to check_layers.py)")
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith((".c", ".h")):
                continue
            mod = f"{layer}/{os.path.splitext(name)[0]}"
            for inc in includes(os.path.join(folder, name)):
                if "/" not in inc:
                    problems.append(f"src/{layer}/{name}: includes \"{inc}\" without its layer")
                    continue
                to_layer = inc.split("/")[0]
                if to_layer not in ALLOWED[layer]:
                    problems.append(f"src/{layer}/{name}: {layer}/ may not include {inc}")
                dep = os.path.splitext(inc)[0]
                if dep != mod:
                    deps.setdefault(mod, set()).add(dep)
    for top in ("tools", "examples"):
        for dirpath, _, files in os.walk(os.path.join(repo, top)):
            for name in files:
                if name.endswith((".c", ".h")):
                    path = os.path.join(dirpath, name)
                    for inc in includes(path):
                        if inc.split("/")[0] in ALLOWED:
                            problems.append(f"{os.path.relpath(path, repo)}: includes {inc} (public API only)")
    problems += cycles(deps)
    for p in problems:
        print("FAIL", p)
    print(f"{len(deps)} modules checked, {len(problems)} problems")
    return 1 if problems else 0


def cycles(deps):
    """One message per circle found by a depth-first search."""
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(deps.get(m, ())):
            if state.get(d) == 1:
                found.append("circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m)
    return found


if __name__ == "__main__":
    sys.exit(main())
