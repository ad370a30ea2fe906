#!/usr/bin/env python3
"""What meldb ships with: every package an application's build of meldb
compiles (the workspace's normal dependencies, not dev or build ones)
comes from crates.io, is under a licence an app can ship beside meldb's
own (MIT OR Apache-2.0), and declares a rust-version no newer than
meldb's.

One scoped exception: UniFFI (the `uniffi*` crates) is MPL-2.0, and only
the bindings crate (crates/meldb-ffi) may depend on it. MPL-2.0 is
copyleft per file: an app may link the unmodified crates into a library
under any licence, and must offer only the sources of those files (which
are crates.io's) if it changes them. That suits bindings, which every
Rust project that ships its core to phones builds the same way (Mozilla's
application-services, matrix-rust-sdk); it would not suit the library, so
a `uniffi*` crate, or anything MPL, reachable from any other member is
still a problem.

clippy's `incompatible_msrv` (on by default, denied in CI) checks meldb's
own code against `rust-version`; no older toolchain can be installed
here, so this checks the dependencies' declarations. cargo-deny would do
the licence and source checks, but its advisory database lives on GitHub,
which this machine cannot reach; this is the part that works offline.
Reads `cargo metadata --format-version 1` on stdin.
"""
import json
import re
import sys

# Permissive licences, compatible with shipping under MIT OR Apache-2.0.
ALLOWED = {
    "MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC",
    "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "CC0-1.0", "Unlicense",
    "BSL-1.0",
}

# Licences allowed for some crates only, when only the given workspace
# members reach them: (licence, crate-name prefix, members).
SCOPED = [("MPL-2.0", "uniffi", {"meldb-ffi"})]


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def licence_ok(expression):
    """Whether an SPDX expression (with the old `/` for OR) allows use
    under the licences in ALLOWED: OR needs one side, AND both, and
    `X WITH exception` is X with more permission."""
    tokens = re.findall(r"\(|\)|[^\s()/]+|/", expression)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def primary():
        if peek() == "(":
            take()
            value = disjunction()
            if take() != ")":
                raise ValueError(expression)
            return value
        name = take()
        if peek() == "WITH":
            take()
            take()
        return name in ALLOWED

    def conjunction():
        value = primary()
        while peek() == "AND":
            take()
            value = primary() and value
        return value

    def disjunction():
        value = conjunction()
        while peek() in ("OR", "/"):
            take()
            value = conjunction() or value
        return value

    result = disjunction()
    if pos != len(tokens):
        raise ValueError(expression)
    return result


def main():
    meta = json.load(sys.stdin)
    packages = {p["id"]: p for p in meta["packages"]}
    members = set(meta["workspace_members"])
    ours = [packages[i] for i in members]
    if any(not p.get("rust_version") for p in ours):
        sys.exit("every workspace member must declare rust-version")
    msrv = min(version(p["rust_version"]) for p in ours)

    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

    def reachable(roots):
        seen, todo = set(), list(roots)
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            for dep in nodes[node]["deps"]:
                if any(k["kind"] is None for k in dep["dep_kinds"]):
                    todo.append(dep["pkg"])
        return seen

    seen = reachable(members)
    # Which members reach each dependency, for the scoped exceptions.
    reached_by = {}
    for member in members:
        for pid in reachable([member]):
            reached_by.setdefault(pid, set()).add(packages[member]["name"])

    def scoped_ok(p, licence):
        for allowed, prefix, only in SCOPED:
            if (p["name"].startswith(prefix) and allowed in licence
                    and reached_by.get(p["id"], set()) <= only):
                return True
        return False

    problems, undeclared = [], []
    for pid in sorted(seen - members):
        p = packages[pid]
        name = f'{p["name"]} {p["version"]}'
        if not str(p.get("source")).startswith("registry+"):
            problems.append(f"{name} does not come from crates.io ({p.get('source')})")
        licence = p.get("license")
        if not licence:
            problems.append(f"{name} declares no licence")
        elif not licence_ok(licence) and not scoped_ok(p, licence):
            problems.append(f"{name} is under {licence}, not one of the allowed licences")
        rv = p.get("rust_version")
        if rv is None:
            undeclared.append(p["name"])
        elif version(rv) > msrv:
            problems.append(f"{name} needs Rust {rv}, newer than meldb's {'.'.join(map(str, msrv))}")
    print(f"{len(seen - members)} dependencies checked: from crates.io, licences allowed, "
          f"rust-version at most {'.'.join(map(str, msrv))} "
          f"({len(undeclared)} declare none: {', '.join(sorted(set(undeclared))) or '-'})")
    if problems:
        sys.exit("dependency problems:\n  " + "\n  ".join(problems))


def self_test():
    """The licence rule on the expressions it must get right."""
    cases = {
        "MIT": True, "GPL-3.0": False, "MIT OR GPL-3.0": True,
        "MIT AND GPL-3.0": False, "(MIT OR Apache-2.0) AND Unicode-3.0": True,
        "Apache-2.0 WITH LLVM-exception OR GPL-2.0": True, "MIT/Apache-2.0": True,
        "LGPL-2.1-or-later": False, "GPL-2.0 WITH Classpath-exception-2.0": False,
    }
    wrong = [e for e, want in cases.items() if licence_ok(e) != want]
    if wrong:
        sys.exit(f"licence rule wrong on: {wrong}")


if __name__ == "__main__":
    self_test()
    main()
