#!/usr/bin/env bash
# Point-in-time recovery, measured: a cluster archiving through `backstop wal-push`, a
# pgbench database of --scale, then on one machine, side by side:
#   - backstop backup of the cluster (base backup)  vs  pg_basebackup -Ft -D - | zstd | age
#   - backstop restore --to DIR (recover to the newest point, then stop)  vs  the logical
#     restore of the same database (backstop restore of a pg_dump job)
#   - RPO: how old the newest archived WAL gets under a trickle of writes with
#     archive_timeout = --timeout seconds (sampled from `backstop status --json`)
#   - when pgbackrest is installed (Debian's package): its full backup of the same cluster
#     (zstd level 3, aes-256-cbc repository, process-max = cores), archive-push chained
#     before backstop's in archive_command
# Wall time and peak RSS (largest process) of each; sizes stored.
#
#   scripts/bench-pitr.sh [--scale 20] [--timeout 60] [--rpo-seconds 150]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scale=20
timeout=60
rpo_for=150
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --rpo-seconds) rpo_for=$2; shift 2 ;;
    *) echo "usage: $0 [--scale N] [--timeout S] [--rpo-seconds S]" >&2; exit 2 ;;
  esac
done
bash scripts/install-deps.sh >/dev/null
cargo build --release --locked -q --bin backstop
bs="$root/target/release/backstop"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
work=$(mktemp -d /tmp/backstop-bench-pitr.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  bash "$root/scripts/pg-scratch.sh" stop "$work/pg"
  for d in "$work"/restored-*; do [ -f "$d/postmaster.pid" ] && run "$bin/pg_ctl" -D "$d" -m fast stop >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/store/pitr/wal" "$work/pgstate" "$work/jobs"
age-keygen -o "$work/key.txt" 2>/dev/null
recip=$(age-keygen -y "$work/key.txt")
export BACKSTOP_STATE_DIR="$work/state"
url="postgres://postgres@127.0.0.1:$port"
cat > "$work/jobs/pitr.toml" <<TOML
[source]
type = "postgres-cluster"
url = "$url/postgres"
[storage]
url = "file://$work/store"
[encryption]
recipients = ["$recip"]
identity_file = "$work/key.txt"
TOML
cat > "$work/jobs/logical.toml" <<TOML
[source]
type = "postgres"
url = "$url/bench"
[storage]
url = "file://$work/store"
[encryption]
recipients = ["$recip"]
identity_file = "$work/key.txt"
TOML
chmod 644 "$work/jobs"/*.toml
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$work/store" "$work/pgstate"
bash scripts/pg-scratch.sh start "$work/pg" "$port"
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
pgbr=""
if command -v pgbackrest >/dev/null; then
  mkdir -p "$work/pgbr/repo" "$work/pgbr/log" "$work/pgbr/spool"
  cat > "$work/pgbr/pgbackrest.conf" <<CONF
[global]
repo1-path=$work/pgbr/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-only-passphrase
compress-type=zst
compress-level=3
process-max=$(nproc)
log-path=$work/pgbr/log
lock-path=$work/pgbr/spool
spool-path=$work/pgbr/spool
start-fast=y
[bench]
pg1-path=$work/pg/data
pg1-port=$port
pg1-socket-path=$work/pg
CONF
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$work/pgbr"
  pgbr="pgbackrest --config=$work/pgbr/pgbackrest.conf --stanza=bench"
fi
chain=""
[ -n "$pgbr" ] && chain="$pgbr archive-push %p && "
psql -d "$url/postgres" -c "ALTER SYSTEM SET archive_mode = on" \
  -c "ALTER SYSTEM SET archive_command = '${chain}BACKSTOP_STATE_DIR=$work/pgstate $bs --jobs $work/jobs -q wal-push pitr %p'" \
  -c "ALTER SYSTEM SET archive_timeout = '$timeout'"
run "$bin/pg_ctl" -D "$work/pg/data" -m fast -w restart -l "$work/pg/server.log" >/dev/null
psql -d "$url/postgres" -c "CREATE DATABASE bench"
"$bin/pgbench" -i -q -s "$scale" "$url/bench" >/dev/null 2>&1
psql -d "$url/bench" -c "VACUUM ANALYZE" -c "CHECKPOINT"
dbsize=$(psql -At -d "$url/bench" -c "SELECT pg_size_pretty(pg_database_size('bench'))")

measure() { # NAME CMD...
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { echo "$name failed:" >&2; cat "$work/err" >&2; exit 1; }
  read -r wall rss < "$work/time"
  printf '%-58s %7s s %6s MiB\n' "$name" "$wall" "$((rss / 1024))"
}
settle() { psql -d "$url/postgres" -c "CHECKPOINT"; sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches; sleep 1; }

echo "machine: $(nproc) cores; pgbench scale $scale, database $dbsize"
settle
measure "pg_basebackup -Ft -D - -X fetch | zstd -3 -T0 | age" bash -c "set -o pipefail; '$bin/pg_basebackup' -d '$url/postgres' -D - -Ft -X fetch -c fast | zstd -q -3 -T0 | age -r $recip > '$work/base.age'"
settle
measure "backstop backup (cluster: base backup)" "$bs" --jobs "$work/jobs" -q backup pitr
if [ -n "$pgbr" ]; then
  as_pg=()
  [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
  "${as_pg[@]}" $pgbr stanza-create >/dev/null
  settle
  measure "pgbackrest --type=full backup (zst 3, encrypted repo)" "${as_pg[@]}" $pgbr --type=full backup
  echo "stored: pgbackrest $(du -sb "$work/pgbr/repo/backup" | awk '{print $1}' | numfmt --to=iec-i --suffix=B)"
fi
base_stored=$("$bs" --jobs "$work/jobs" --json list pitr | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stored_bytes"])')
echo "stored: backstop $(numfmt --to=iec-i --suffix=B "$base_stored"), pipe $(numfmt --to=iec-i --suffix=B "$(stat -c %s "$work/base.age")")"
settle
measure "backstop restore --to DIR (cluster, right after the base)" "$bs" --jobs "$work/jobs" -q restore pitr --to "$work/restored-0"
# Work after the base backup, archived.
"$bin/pgbench" -n -T 10 -c 2 "$url/bench" >/dev/null 2>&1
psql -d "$url/postgres" -c "SELECT pg_switch_wal()" >/dev/null
sleep 3
settle
measure "backstop backup (logical: pg_dump of bench)" "$bs" --jobs "$work/jobs" -q backup logical
settle
measure "backstop restore --to DIR (cluster, after 10 s of pgbench)" "$bs" --jobs "$work/jobs" -q restore pitr --to "$work/restored-1"
"$bs" --jobs "$work/jobs" --json restore pitr --to "$work/restored-2" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  again, where the time went: extract %.1f s, WAL fetch and check %.1f s (%d files), recovery %.1f s" % (r["extract_ms"]/1000, r["wal_ms"]/1000, r["wal_files"], r["recovery_ms"]/1000))'
psql -d "$url/postgres" -c "DROP DATABASE IF EXISTS bench_logical" >/dev/null
settle
measure "backstop restore --to URL (logical, same database)" "$bs" --jobs "$work/jobs" -q restore logical --to "$url/bench_logical"

# RPO under a trickle of writes: one small transaction a second.
echo "RPO with archive_timeout = ${timeout}s, one write a second, sampled for ${rpo_for}s:"
psql -d "$url/bench" -c "CREATE TABLE trickle (t timestamptz)"
end=$((SECONDS + rpo_for))
max=0
while [ $SECONDS -lt $end ]; do
  psql -d "$url/bench" -c "INSERT INTO trickle VALUES (now())" >/dev/null
  json=$("$bs" --jobs "$work/jobs" --json status pitr 2>/dev/null || true)
  rpo=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["wal"]["rpo_seconds"] or 0)' 2>/dev/null || echo 0)
  [ "$rpo" -gt "$max" ] && max=$rpo
  sleep 1
done
echo "  largest RPO seen: ${max} s"
