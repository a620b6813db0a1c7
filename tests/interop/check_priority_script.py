#!/usr/bin/env python3
"""check_priority_script.py -- every copy of the priority push script
(PROTOCOL.md 7, "priority") is the same text, byte for byte.

The script that pushes high and low calls is written out in each peer (Ruby
lib/rrpc/priority.rb, Python src/rrpc/priority.py, Node lib/priority.js),
in the C library when it has one (a C string literal under src/) and in
docs/PROTOCOL.md once it states it (an indented or fenced block).  Each is
extracted as its language writes it -- a Ruby squiggly heredoc, a Python
triple-quoted string, a JS template literal, adjacent C string literals --
and all must be equal (a trailing newline is not significant).  A copy the
checker cannot find or read is a failure, not a skip: only PROTOCOL.md and
the C library may lack it.

Usage: check_priority_script.py [REPO_ROOT]
"""

import ast
import pathlib
import re
import sys

MARK = 'local p = ARGV[#ARGV]'


def ruby(text):
    m = re.search(r"PRIORITY_SCRIPT = <<~LUA\n(.*?)\n[ \t]*LUA\n", text, re.S)
    if not m:
        return None
    lines = m.group(1).split('\n')
    indent = min(len(l) - len(l.lstrip(' ')) for l in lines if l.strip())
    return '\n'.join(l[indent:] for l in lines) + '\n'


def python(text):
    m = re.search(r'PRIORITY_SCRIPT = ("""\\\n.*?""")', text, re.S)
    return ast.literal_eval(m.group(1)) if m else None


def node(text):
    m = re.search(r"const PRIORITY_SCRIPT = `\\\n(.*?)`;", text, re.S)
    if not m or '${' in m.group(1) or '\\' in m.group(1):
        return None  # a template with substitutions or escapes is not read here
    return m.group(1)


def c_literal(text):
    """The adjacent C string literals around MARK, concatenated and decoded."""
    at = text.find(MARK)
    start = text.rfind('=', 0, at)
    start = max(start, text.rfind('(', 0, at), text.rfind(',', 0, at))
    m = re.match(r'\s*((?:"(?:[^"\\\n]|\\.)*"\s*)+)', text[start + 1:])
    if not m:
        return None
    parts = re.findall(r'"((?:[^"\\\n]|\\.)*)"', m.group(1))
    return ''.join(ast.literal_eval('"%s"' % p) for p in parts)


def markdown(text):
    """The block of PROTOCOL.md that holds the script: indented or fenced."""
    lines = text.split('\n')
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        indent = len(line) - len(line.lstrip(' '))
        block = []
        for more in lines[i:]:
            if more.strip().startswith('```') or (more.strip() and
                                                    len(more) - len(more.lstrip(' ')) < indent):
                break
            block.append(more[indent:])
        while block and not block[-1].strip():
            block.pop()
        return '\n'.join(block) + '\n'
    return None


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                        pathlib.Path(__file__).resolve().parents[2])
    copies, problems = {}, []
    for path, read in [('clients/ruby/lib/rrpc/priority.rb', ruby),
                       ('clients/python/src/rrpc/priority.py', python),
                       ('clients/node/lib/priority.js', node)]:
        got = read((root / path).read_text(encoding='utf-8'))
        if got is None:
            problems.append(f'{path}: PRIORITY_SCRIPT not found or not readable')
        else:
            copies[path] = got
    doc = markdown((root / 'docs/PROTOCOL.md').read_text(encoding='utf-8'))
    if doc is not None:
        copies['docs/PROTOCOL.md'] = doc
    else:
        print('note: docs/PROTOCOL.md does not state the script (yet): the peers are '
              'compared with each other')
    for path in sorted((root / 'src').rglob('*.[ch]')):
        text = path.read_text(encoding='utf-8', errors='replace')
        if MARK in text:
            got = c_literal(text)
            rel = str(path.relative_to(root))
            if got is None or not got.startswith(MARK):
                problems.append(f'{rel}: holds the script in a form this checker cannot read')
            else:
                copies[rel] = got
    texts = {t.rstrip('\n') + '\n' for t in copies.values()}
    if len(texts) > 1:
        first = next(iter(copies))
        for path, text in copies.items():
            if text.rstrip('\n') != copies[first].rstrip('\n'):
                problems.append(f'{path} differs from {first}:\n--- {first}\n{copies[first]}'
                                f'--- {path}\n{text}')
    for p in problems:
        print('FAIL:', p)
    if problems:
        return 1
    print(f'ok: the priority script is the same in {len(copies)} places: ' + ', '.join(copies))
    return 0


if __name__ == '__main__':
    sys.exit(main())
