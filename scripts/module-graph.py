#!/usr/bin/env python3
"""Print the library's module import edges and the cycles between top-level modules.

An edge `a -> b` means a file of module `a` (src/a.rs, src/a/*.rs, and files they include with
`#[path]`) names `crate::b` outside comments and `#[cfg(test)]` modules. Usage:

    scripts/module-graph.py            # cycles only (exit status 1 when there is one)
    scripts/module-graph.py --edges    # every edge, then the cycles
    scripts/module-graph.py --uses app # who names `crate::app`
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path):
    rel = path.relative_to(ROOT)
    if rel.parts[0] in ("lib.rs", "main.rs") or rel.name.endswith("_tests.rs"):
        return None  # the binary, the module list, and test files (`#[cfg(test)]`)
    return rel.parts[0].removesuffix(".rs")


def strip(text):
    """The text with comments removed and string and char literals emptied (one pass, so
    `//` inside a string and quotes inside a comment are what they are)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = len(re.match(r'r(#*)"', text[i:]).group(1))
            end = text.find('"' + "#" * hashes, i + 2 + hashes)
            out.append('""')
            i = n if end < 0 else end + 1 + hashes
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12]):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def code_of(text):
    """The code without comments, literals and `#[cfg(test)]` modules."""
    text = strip(text)
    out, depth, skipping, pending = [], 0, None, False
    for line in text.splitlines():
        if skipping is None and re.match(r"\s*#\[cfg\(test\)\]", line):
            pending = True
            continue
        if pending and re.match(r"\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", line):
            skipping, pending = depth, False
        elif pending and line.strip():
            pending = False
        opened, closed = line.count("{"), line.count("}")
        if skipping is None:
            out.append(line)
        depth += opened - closed
        if skipping is not None and depth <= skipping:
            skipping = None
    return "\n".join(out)


def names(code):
    """Top-level modules named as `crate::x`, including `use crate::{x, y::z}`."""
    found = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code))
    for group in re.findall(r"\bcrate::\{([^}]*(?:\{[^}]*\}[^}]*)*)\}", code):
        depth, item = 0, ""
        for ch in group + ",":
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                m = re.match(r"\s*([a-z_][a-z0-9_]*)", item)
                if m:
                    found.add(m.group(1))
                item = ""
            else:
                item += ch
    return found


def graph():
    edges = {}
    for path in sorted(ROOT.rglob("*.rs")):
        a = module_of(path)
        if a is None:
            continue
        for b in names(code_of(path.read_text())):
            if b != a:
                edges.setdefault(a, {}).setdefault(b, set()).add(str(path.relative_to(ROOT.parent)))
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    args = sys.argv[1:]
    if args[:1] == ["--uses"] and len(args) == 2:
        for a in sorted(edges):
            for f in sorted(edges[a].get(args[1], ())):
                print(f)
        return 0
    if "--edges" in args:
        for a in sorted(edges):
            print(f"{a} -> {', '.join(sorted(edges[a]))}")
    comps = cycles(edges)
    for comp in comps:
        members = set(comp)
        print(f"cycle: {' '.join(comp)}")
        for a in comp:
            for b in sorted(set(edges.get(a, {})) & members):
                print(f"  {a} -> {b}  ({', '.join(sorted(edges[a][b]))})")
    if not comps:
        print("no cycles")
    return 1 if comps else 0


if __name__ == "__main__":
    sys.exit(main())
