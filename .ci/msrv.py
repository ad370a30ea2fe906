#!/usr/bin/env python3
"""The declared MSRV holds for the whole normal dependency tree.

clippy's `incompatible_msrv` (on by default, denied in CI) checks meldb's
own code against `rust-version`; no older toolchain can be installed
here, so this checks the rest: every package the workspace builds with
declares a `rust-version` no newer than meldb's own (a package that
declares none is reported, not failed). Reads `cargo metadata` on stdin.
"""
import json
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
ours = [packages[i] for i in meta["workspace_members"]]
msrv = min(version(p["rust_version"]) for p in ours if p.get("rust_version"))
if any(not p.get("rust_version") for p in ours):
    sys.exit("every workspace member must declare rust-version")

# The normal (non-dev, non-build) dependency closure of the workspace.
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
seen, todo = set(), list(meta["workspace_members"])
while todo:
    node = todo.pop()
    if node in seen:
        continue
    seen.add(node)
    for dep in nodes[node]["deps"]:
        if any(k["kind"] is None for k in dep["dep_kinds"]):
            todo.append(dep["pkg"])

too_new, undeclared = [], []
for pid in sorted(seen):
    p = packages[pid]
    rv = p.get("rust_version")
    if rv is None:
        undeclared.append(p["name"])
    elif version(rv) > msrv:
        too_new.append(f'{p["name"]} {p["version"]} needs Rust {rv}')
shown = ".".join(map(str, msrv))
print(f"{len(seen)} packages checked against rust-version {shown}; "
      f"{len(undeclared)} declare none: {', '.join(sorted(set(undeclared))) or '-'}")
if too_new:
    sys.exit("dependencies newer than meldb's rust-version:\n  " + "\n  ".join(too_new))
