#!/usr/bin/env python3
"""Checks that backstop's modules import only downward.

Every top-level module of src/ (a folder with mod.rs, or a single file) declares in its
`//!` header a line `May import: a, b, c.` naming the top-level modules it may use. This
script reads every `crate::NAME` reference in each module's files and fails when one
names a module not on that list, when a module has no such line, or when the declared
lists themselves form a cycle. Nothing outside `cli` may import `cli`.
Exit 0 when the tree keeps to its layers; 1 with one line per violation otherwise.
Also prints the largest import cycle between files, for the record.
"""
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
root = os.path.normpath(root)

def top_modules():
    mods = {}
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        if os.path.isdir(p) and os.path.isfile(os.path.join(p, "mod.rs")):
            mods[name] = os.path.join(p, "mod.rs")
        elif name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            mods[name[:-3]] = p
    return mods

def files_of(name, head):
    if head.endswith("mod.rs"):
        d = os.path.dirname(head)
        for dp, _, fs in os.walk(d):
            for f in fs:
                if f.endswith(".rs"):
                    yield os.path.join(dp, f)
    else:
        yield head

def header(path):
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("//!"):
                break
            lines.append(line[3:].strip())
    return " ".join(lines)

def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(l.split("//")[0] if "\"" not in l else l for l in text.split("\n"))

mods = top_modules()
errors = []
allowed = {}
for name, head in mods.items():
    h = header(head)
    if not h:
        errors.append(f"src/{os.path.relpath(head, root)}: no //! header saying what it owns")
    m = re.search(r"May import:\s*([^.]*)\.", h)
    if m is None:
        # A leaf file may say "imports nothing of the crate".
        allowed[name] = set()
        if "imports nothing" not in h and name not in ("error", "cleanup"):
            errors.append(f"src/{os.path.relpath(head, root)}: no 'May import: ...' line in its //! header")
        continue
    names = {x.strip() for x in m.group(1).replace("\n", " ").split(",") if x.strip()}
    if names == {"everything"} or "everything" in m.group(1):
        names = set(mods) - {name}
    unknown = names - set(mods)
    if unknown:
        errors.append(f"{name}: 'May import' names unknown modules {sorted(unknown)}")
    allowed[name] = names & set(mods)

# Every file starts with a //! line.
for dp, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(dp, f)
            with open(p, encoding="utf-8") as fh:
                if not fh.readline().startswith("//!"):
                    errors.append(f"src/{os.path.relpath(p, root)}: does not start with a //! line")

file_edges = {}
for name, head in mods.items():
    for path in files_of(name, head):
        with open(path, encoding="utf-8") as f:
            text = strip_comments(f.read())
        used = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        for u in sorted(used):
            if u == name or u not in mods:
                continue
            if u == "cli" and name != "cli":
                errors.append(f"src/{os.path.relpath(path, root)}: imports cli (nothing below the command line may)")
            elif u not in allowed.get(name, set()):
                errors.append(f"src/{os.path.relpath(path, root)}: imports {u}, which {name}'s mod.rs does not allow")
        file_edges[path] = used

# The declared layers must themselves be acyclic.
state = {}
def visit(n, stack):
    state[n] = 1
    for m in allowed.get(n, ()):
        if state.get(m) == 1:
            errors.append(f"declared layers form a cycle: {' -> '.join(stack + [n, m])}")
        elif state.get(m) is None:
            visit(m, stack + [n])
    state[n] = 2
for n in mods:
    if n not in state:
        visit(n, [])

# For the record: the largest strongly connected set of top-level modules actually used.
graph = {n: set() for n in mods}
for path, used in file_edges.items():
    rel = os.path.relpath(path, root).split(os.sep)[0].removesuffix(".rs")
    graph.setdefault(rel, set()).update(u for u in used if u in mods and u != rel)
index, low, onstack, st, sccs, counter = {}, {}, set(), [], [], [0]
def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; st.append(v); onstack.add(v)
    for w in graph.get(v, ()):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in onstack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = st.pop(); onstack.discard(w); comp.append(w)
            if w == v:
                break
        sccs.append(comp)
for v in graph:
    if v not in index:
        strong(v)
largest = max(sccs, key=len)
print(f"check-layers: {len(mods)} top-level modules; largest import cycle between them: {len(largest)} module(s)"
      + (f" ({', '.join(sorted(largest))})" if len(largest) > 1 else ""))
if len(largest) > 1:
    errors.append(f"import cycle between top-level modules: {sorted(largest)}")
for e in errors:
    print(f"check-layers: {e}")
sys.exit(1 if errors else 0)
