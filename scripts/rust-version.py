#!/usr/bin/env python3
"""Is Cargo.toml's `rust-version` at least what the dependencies declare?

A crate cannot build on a toolchain older than any crate it compiles, so
the floor of our `rust-version` is the highest `rust-version` among the
crates in Cargo.lock that a build of the package compiles (normal and build
dependencies, for Linux; `cargo install` does not build dev-dependencies,
which are listed apart). Prints the crates that set it; exits 1 when
Cargo.toml claims less.

What this cannot see: our own code using a standard-library API newer than
the claim. Clippy's `incompatible_msrv` lint (on by default, and CI denies
warnings) reads `rust-version` and flags exactly that. Only a build with
that toolchain proves the rest.

Usage: scripts/rust-version.py      (needs cargo; reads Cargo.lock, --locked)
"""
import json
import subprocess
import sys


def version_key(version):
    return tuple(int(part) for part in version.split("."))


def dependencies(meta, kinds):
    """Every package reachable from ours through `kinds` of dependency edges
    at the top (None = normal), and through anything below."""
    nodes = {node["id"]: node for node in meta["resolve"]["nodes"]}
    root = meta["resolve"]["root"]
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        for dep in nodes[node]["deps"]:
            dep_kinds = {k["kind"] for k in dep["dep_kinds"]}
            if node == root and not dep_kinds & kinds:
                continue
            if dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])
    return seen


def highest(meta, ids):
    packages = {p["id"]: p for p in meta["packages"]}
    declared = [
        (packages[i]["rust_version"], packages[i]["name"], packages[i]["version"])
        for i in ids
        if packages[i]["rust_version"]
    ]
    top = max(version_key(v) for v, _, _ in declared)
    setters = sorted(f"{n} {v}" for rv, n, v in declared if version_key(rv) == top)
    return top, setters, len(ids) - len(declared)


def main():
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--locked",
             "--filter-platform", "x86_64-unknown-linux-gnu"]
        )
    )
    ours = next(p for p in meta["packages"] if p["id"] == meta["resolve"]["root"])
    claimed = ours["rust_version"]
    build, build_setters, undeclared = highest(meta, dependencies(meta, {None, "build"}))
    dev, dev_setters, _ = highest(meta, dependencies(meta, {None, "build", "dev"}))
    show = lambda v: ".".join(map(str, v))
    print(f"Cargo.toml rust-version: {claimed}")
    print(f"build needs {show(build)}: {', '.join(build_setters)} "
          f"({undeclared} crates declare none)")
    print(f"tests and benches need {show(dev)}: {', '.join(dev_setters)}")
    if claimed is None or version_key(claimed) < build:
        print(f"rust-version must be at least {show(build)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
