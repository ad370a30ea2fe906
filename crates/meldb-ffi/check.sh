#!/usr/bin/env bash
# The bindings' checks, as .ci/run runs them (from the repository's root or
# anywhere): build the Python wheel with maturin, install it into a fresh
# virtual environment, run the Python suite against the installed wheel
# (with the `meldb` command line as the Rust replica), then generate the
# Kotlin and Swift bindings from the same library and check that the ones
# committed under bindings/ are up to date.
#
#   crates/meldb-ffi/check.sh            # all of it
#   crates/meldb-ffi/check.sh --update   # rewrite bindings/ from this build
#
# Needs Python 3.10+ with venv (pytest 9), and PyPI (maturin and pytest, pinned here).
# MELDB_FFI_WORK (default: target/ffi-check) holds the virtual
# environments and the wheel; MELDB_BIN, if set, is the `meldb` to use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
work="${MELDB_FFI_WORK:-$target/ffi-check}"
update=0
[ "${1:-}" = "--update" ] && update=1

MATURIN_VERSION=1.16.0
PYTEST_VERSION=9.2.0

echo "== bindings: the build tools (maturin $MATURIN_VERSION) in their own virtual environment"
if [ ! -x "$work/tools/bin/maturin" ] || ! "$work/tools/bin/maturin" --version | grep -qF "$MATURIN_VERSION"; then
  rm -rf "$work/tools"
  python3 -m venv "$work/tools"
  "$work/tools/bin/pip" install --quiet --disable-pip-version-check "maturin==$MATURIN_VERSION"
fi

echo "== bindings: the Python wheel (maturin, profile wheel)"
rm -rf "$work/wheels"
(cd "$here" && "$work/tools/bin/maturin" build --quiet --out "$work/wheels")
wheel="$(ls "$work/wheels"/meldb-*.whl)"
echo "built $(basename "$wheel")"

echo "== bindings: the Python suite, from the wheel installed in a fresh virtual environment"
rm -rf "$work/venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "pytest==$PYTEST_VERSION" "$wheel"
if [ -z "${MELDB_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet --bin meldb)
  MELDB_BIN="$target/debug/meldb"
fi
# From outside the source tree, so `import meldb` can only be the wheel.
(cd "$work" && MELDB_BIN="$MELDB_BIN" "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
  --rootdir "$here/python" "$here/python/tests")

echo "== bindings: the per-call benchmark at a smoke size (python/bench/calls.py; MELDB_FFI_BENCH_N=10000 for the README's figures)"
(cd "$root" && cargo build --quiet -p meldb-ffi --profile wheel --example calls)
"$work/venv/bin/python" "$here/python/bench/calls.py" --rust-bin "$target/wheel/examples/calls" \
  --n "${MELDB_FFI_BENCH_N:-1000}" --rounds "${MELDB_FFI_BENCH_ROUNDS:-1}"

echo "== bindings: Kotlin and Swift, generated from the same library, match bindings/"
library="$target/wheel/libmeldb_ffi.so"
bindgen="$target/debug/uniffi-bindgen"
# maturin built it for the Python step; built here too, so this step never
# runs a stale generator.
(cd "$root" && cargo build --quiet -p meldb-ffi --features bindgen --bin uniffi-bindgen)
rm -rf "$work/generated"
for language in kotlin swift; do
  (cd "$here" && "$bindgen" generate --no-format --language "$language" \
    --out-dir "$work/generated/$language" "$library" > /dev/null)
done
if [ "$update" = 1 ]; then
  rm -rf "$here/bindings/kotlin" "$here/bindings/swift"
  cp -r "$work/generated/kotlin" "$work/generated/swift" "$here/bindings/"
  echo "bindings/ rewritten"
else
  stale=0
  diff -r "$here/bindings/kotlin" "$work/generated/kotlin" > "$work/kotlin.diff" || stale=1
  diff -r "$here/bindings/swift" "$work/generated/swift" > "$work/swift.diff" || stale=1
  if [ "$stale" = 1 ]; then
    head -40 "$work/kotlin.diff" "$work/swift.diff" >&2 || true
    echo "the committed Kotlin or Swift bindings are out of date: run crates/meldb-ffi/check.sh --update and commit bindings/" >&2
    exit 1
  fi
  echo "Kotlin and Swift bindings up to date ($(find "$here/bindings" -type f | wc -l) files)"
fi
