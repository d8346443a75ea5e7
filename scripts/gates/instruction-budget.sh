#!/usr/bin/env bash
# The hot path's instruction budget as a gate: the memory binder's
# source > processor > sink with byte payloads, counted by callgrind.
#
# Two runs of the release benchmark binary (10,000 and 110,000 messages);
# their difference over 100,000 is the cost per message with start-up and
# shutdown taken out. Prints the figure; fails when it is over the budget.
#
#   scripts/gates/instruction-budget.sh            # check against BUDGET
#   BINDERY_INSTRUCTION_BUDGET=N scripts/gates/... # another budget
set -euo pipefail
cd "$(dirname "$0")/../.."

ME="instruction-budget"
# Instructions per message. The target (issue 16) is 2,000; today's code
# costs about 7,200 (two boxed function futures, two boxed delivery
# handles, tokio's wake-ups per hop), so the gate holds that line.
BUDGET="${BINDERY_INSTRUCTION_BUDGET:-7500}"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }

if ! command -v valgrind >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "valgrind is missing and installing it needs root (apt-get install -y valgrind)"
    if ! apt-get install -y -qq --no-install-recommends valgrind >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends valgrind >/dev/null
    fi
fi

cargo build --release -q -p bindery-bench --bin bindery-bench
bench="${CARGO_TARGET_DIR:-target}/release/bindery-bench"

# Instructions callgrind counted over one bindery run of $1 messages.
instructions() {
    local out
    out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$bench" --rounds 1 --only memory-bytes --side bindery --messages "$1" \
        --json /dev/null 2>&1) || die "the benchmark failed under callgrind:
$out"
    sed -n 's/.*Collected : \([0-9][0-9]*\).*/\1/p' <<<"$out" | tail -1
}

small=$(instructions 10000)
large=$(instructions 110000)
[ -n "$small" ] && [ -n "$large" ] || die "callgrind printed no instruction count"
per_message=$(( (large - small) / 100000 ))
echo "$ME: $per_message instructions per message (memory source > processor > sink, bytes; budget $BUDGET)"
[ "$per_message" -le "$BUDGET" ] || die "$per_message instructions per message is over the budget of $BUDGET"
