#!/usr/bin/env bash
# Coverage-guided fuzzing of stagebot's parsers (docs/reliability.md, "Fuzzing").
#
# Targets (fuzz/fuzz_targets/): parse_event (webhook payloads), parse_commands (comment bodies),
# repo_config (.github/stagebot.yml), slug (preview slugs and host labels).
#
# Uses cargo-fuzz (libFuzzer) on the *stable* toolchain with RUSTC_BOOTSTRAP=1 (no nightly
# toolchain is needed); installs cargo-fuzz from crates.io when it is missing. Each target's
# corpus (fuzz/corpus/<target>/, not committed) is seeded from fixtures/ on every run and keeps
# what libFuzzer finds between runs. A crash leaves its input in fuzz/artifacts/<target>/ and
# makes the script fail.
#
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target ...]
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(parse_event parse_commands repo_config slug)
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

seed() {
    local target=$1 dir=fuzz/corpus/$1
    mkdir -p "$dir"
    case "$target" in
    parse_event)
        # `<event>\n<payload>`: the event is the fixture's directory (GitHub's examples) or the
        # part of its file name before the first `-` (fixtures/webhooks).
        for f in fixtures/webhooks/*.json; do
            local base event
            base=$(basename "$f" .json)
            event=${base%%-*}
            { printf '%s\n' "$event"; cat "$f"; } >"$dir/seed-$base"
        done
        for f in fixtures/github-webhook-examples/*/*.json; do
            local event
            event=$(basename "$(dirname "$f")")
            { printf '%s\n' "$event"; cat "$f"; } >"$dir/seed-$event-$(basename "$f" .json)"
        done
        ;;
    parse_commands)
        # Comment bodies from the fixtures, and the command reference's examples.
        for f in fixtures/webhooks/issue_comment-*.json fixtures/github-webhook-examples/issue_comment/*.json; do
            python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["comment"]["body"], end="")' "$f" \
                >"$dir/seed-$(basename "$(dirname "$f")")-$(basename "$f" .json)" 2>/dev/null || true
        done
        grep -ho '`/[a-z][^`]*`' docs/commands.md | tr -d '`' | sort -u | awk '{ print > ("'"$dir"'/seed-doc-" NR) }'
        printf '/stage lite\n/promote staging production\n```\n/stage\n```\n> /rollback production 3\n/extend 3d\r\n/help\n' \
            >"$dir/seed-mixed"
        ;;
    repo_config)
        # The documented examples of .github/stagebot.yml.
        awk '/^```ya?ml/{ n++; f=1; next } /^```/{ f=0 } f { print > ("'"$dir"'/seed-doc-" n) }' \
            docs/configuration.md README.md
        printf 'preview:\n  auto: true\n  ttl: 3d\n  profiles: { lite: {}, full: {} }\nproduction:\n  deploy_on_merge: true\n  permission: admin\n' \
            >"$dir/seed-basic"
        ;;
    slug)
        local i=0
        for b in main feature/login Feature/Login 'a--b' fix-decade "$(printf 'x%.0s' {1..80})" '🚀'; do
            i=$((i + 1))
            { printf '\x2a\x00\x00\x00\x00\x00\x00\x00'; printf '%s\nocto-org\nweb.app_1' "$b"; } >"$dir/seed-$i"
        done
        ;;
    esac
}

status=0
for target in "${targets[@]}"; do
    seed "$target"
    echo "==> fuzzing $target for ${seconds}s"
    if ! (cd fuzz && cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1); then
        echo "!!! $target found a failure: see fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit $status
