#!/usr/bin/env bash
# How long does stagebot's database clone take? Starts a throwaway PostgreSQL cluster (Debian's
# binaries, as the `postgres` user when run as root), fills a snapshot database with pgbench
# data to about SIZE_GB (default 1), then times `CREATE DATABASE … TEMPLATE … STRATEGY =
# FILE_COPY` (what stagebot runs) and, for comparison, the default WAL_LOG strategy. The cluster
# runs with PostgreSQL's default durability settings (fsync on).
#
#   scripts/pg-clone-bench.sh            # 1 GB
#   SIZE_GB=4 scripts/pg-clone-bench.sh
set -euo pipefail
SIZE_GB="${SIZE_GB:-1}"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    echo "PostgreSQL is not installed: apt-get install -y postgresql" >&2
    exit 1
fi
dir=$(mktemp -d)
as_pg=()
if [[ $(id -u) == 0 ]]; then
    chmod 755 "$dir"
    chown postgres:postgres "$dir"
    as_pg=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
cd /
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=''" start >/dev/null
psql() { "${as_pg[@]}" "$bin/psql" -h "$dir" -p "$port" -U postgres -XqAt "$@"; }
psql -d postgres -c "CREATE DATABASE bench_snapshot"
# pgbench: scale 1 is about 15 MB.
scale=$(( SIZE_GB * 1024 / 15 ))
echo "filling bench_snapshot (pgbench scale $scale)…"
"${as_pg[@]}" "$bin/pgbench" -h "$dir" -p "$port" -U postgres -i -q -s "$scale" bench_snapshot >/dev/null 2>&1
psql -d postgres -c "CHECKPOINT"
size=$(psql -d postgres -c "SELECT pg_size_pretty(pg_database_size('bench_snapshot'))")
echo "snapshot size: $size"
for strategy in FILE_COPY WAL_LOG; do
    for i in 1 2 3; do
        start=$(date +%s.%N)
        psql -d postgres -c "CREATE DATABASE bench_clone TEMPLATE bench_snapshot STRATEGY = $strategy"
        end=$(date +%s.%N)
        printf '%-9s run %d: %.2f s\n' "$strategy" "$i" "$(echo "$end - $start" | bc)"
        psql -d postgres -c "DROP DATABASE bench_clone"
    done
done
