#!/usr/bin/env bash
# Proof that the tests catch bugs: applies each deliberately broken variant of the real code
# (sim/mutants/*.patch) to a scratch worktree of HEAD, runs the check its header names
# (`# check: sim` = the whole simulator, `cargo test -p kvs-sim`; else the command given), and
# prints a table: caught or not, and what failed (for the simulator, how many of each scenario's
# pinned seeds). Usage: sim/mutants/run.sh [NAME...]   (`just mutants`). The first run builds
# everything once into target/mutants and target/mutants-madsim.
set -uo pipefail
repo=$(git rev-parse --show-toplevel)
scratch=${KVS_MUTANTS_DIR:-/tmp/kvs-mutants}
# Targets of their own: binaries (kvs, sweep) are copied to a fixed path in a target directory
# whatever the source tree, so sharing target/ would leave a broken binary where tests run it.
target="$repo/target/mutants-madsim"
rm -rf "$scratch"; git -C "$repo" worktree prune
git -C "$repo" worktree add -q --detach "$scratch" HEAD
trap 'git -C "$repo" worktree remove --force "$scratch"' EXIT
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for p in "$repo"/sim/mutants/*.patch; do names+=("$(basename "$p" .patch)"); done
fi
printf '| variant | caught | what failed | seconds |\n| --- | --- | --- | --- |\n'
missed=0
for name in "${names[@]}"; do
  patch="$repo/sim/mutants/$name.patch"
  check=$(sed -n 's/^# check: //p' "$patch" | head -1)
  git -C "$scratch" checkout -q -- . && git -C "$scratch" apply "$patch" || { echo "| $name | patch does not apply | | |"; missed=1; continue; }
  began=$SECONDS
  if [ "$check" = sim ]; then
    out=$(cd "$scratch" && RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$target" cargo test -q -p kvs-sim --no-fail-fast 2>&1); rc=$?
    what=$(grep -oE '[0-9]+ of [0-9]+ seeds of [a-z_]+' <<<"$out" | sort -u | paste -sd ';' | sed 's/;/; /g')
    regressions=$(grep -oE '^[a-z_]+ seed [0-9]+ \(once:' <<<"$out" | sed 's/ (once://; s/^/regression /' | paste -sd ';' | sed 's/;/; /g')
    [ -n "$regressions" ] && what="${what:+$what; }$regressions"
    [ -z "$what" ] && what=$(grep -E '^test .* FAILED$' <<<"$out" | sed 's/^test //; s/ \.\.\. FAILED//' | paste -sd ',' | sed 's/,/, /g')
  else
    out=$(cd "$scratch" && CARGO_TARGET_DIR="$repo/target/mutants" $check 2>&1); rc=$?
    what=$(grep -E '^test .* FAILED$' <<<"$out" | sed 's/^test //; s/ \.\.\. FAILED//' | paste -sd ',' | sed 's/,/, /g')
  fi
  if [ $rc -ne 0 ]; then caught=yes; else caught=NO; missed=1; fi
  echo "| \`$name\` | $caught | ${what:-build or other failure} | $((SECONDS - began)) |"
done
exit $missed
