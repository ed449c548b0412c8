#!/usr/bin/env bash
# Measures backstop on a pgbench database in a throwaway cluster: backup into file:// and
# into a local S3 server (moto), and restore, with wall time, CPU time, peak RSS and
# bytes stored. Also the source limit (pg_dump -Fc --compress=0 > /dev/null) and the shell
# one-liner (pg_dump | zstd | age > file) for comparison.
#   scripts/bench.sh [--scale N] [--quick] [--dataset pgbench|text]
# Default scale 100: a dump of about 1 GB. `pgbench` data is mostly blank padding and
# compresses about 100:1; `text` fills a table with hex digests and JSON that compress
# about 2:1, closer to real application data.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scale=100
dataset=pgbench
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) dataset=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --quick) scale=5; shift ;;
    *) echo "usage: $0 [--scale N] [--quick] [--dataset pgbench|text]" >&2; exit 2 ;;
  esac
done
bash scripts/install-deps.sh >/dev/null
cargo build --release --locked -q --bin backstop --example count_rows
bs="$root/target/release/backstop"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
work=$(mktemp -d /tmp/backstop-bench.XXXXXX)
chmod 755 "$work"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport)
s3port=$(freeport)
moto_pid=
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  bash "$root/scripts/pg-scratch.sh" stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/pg-scratch.sh start "$work/pg" "$port"
url="postgres://postgres@127.0.0.1:$port"
"$bin/psql" -X -q -d "$url/postgres" -c "CREATE DATABASE bench"
echo "loading $dataset data, scale $scale ..." >&2
case "$dataset" in
  pgbench) "$bin/pgbench" -i -q -s "$scale" "$url/bench" >/dev/null 2>&1 ;;
  text)
    "$bin/psql" -X -q -d "$url/bench" -c "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, a text, b text, doc jsonb)"
    "$bin/psql" -X -q -d "$url/bench" -c "INSERT INTO pgbench_accounts SELECT g, md5(g::text) || md5((g*7)::text), md5((g*13)::text), jsonb_build_object('n', g, 'h', left(md5((g*3)::text), 12)) FROM generate_series(1, $scale * 65000) g"
    ;;
  *) echo "unknown dataset $dataset (pgbench, text)" >&2; exit 2 ;;
esac
"$bin/psql" -X -q -d "$url/bench" -c "VACUUM ANALYZE"
dbsize=$("$bin/psql" -X -At -d "$url/bench" -c "SELECT pg_size_pretty(pg_database_size('bench'))")

"$root/.venv-s3/bin/moto_server" -H 127.0.0.1 -p "$s3port" >/dev/null 2>&1 &
moto_pid=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$s3port) 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
python3 - "$s3port" <<'PY'
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/bench", method="PUT")
urllib.request.urlopen(req).read()
PY

age-keygen -o "$work/key.txt" 2>/dev/null
recip=$(age-keygen -y "$work/key.txt")
mkdir -p "$work/jobs"
for kind in file s3; do
  if [ $kind = file ]; then storage="url = \"file://$work/store\""; else
    storage="url = \"s3://bench/b\"
endpoint = \"http://127.0.0.1:$s3port\"
path_style = true"; fi
  cat > "$work/jobs/$kind.toml" <<TOML
[source]
type = "postgres"
url = "$url/bench"
[storage]
$storage
[encryption]
recipients = ["$recip"]
identity_file = "$work/key.txt"
[compression]
level = 3
TOML
done
export BACKSTOP_STATE_DIR="$work/state"

# measure NAME CMD...: wall, user+sys CPU, peak RSS (largest single process)
results=()
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r wall user sys rss < "$work/time"
  results+=("$(awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN { printf "%-36s %8.1f s %8.1f s %8.0f MiB", n, w, u + s, r / 1024 }')")
}

measure "pg_dump -Fc --compress=0 >/dev/null" bash -c "'$bin/pg_dump' -Fc --compress=0 -d '$url/bench' > /dev/null"
measure "one-liner pg_dump|zstd -3 -T0|age" bash -c "set -o pipefail; '$bin/pg_dump' -Fc --compress=0 -d '$url/bench' | zstd -q -3 -T0 | age -r $recip > '$work/oneliner.age'"
measure "backstop backup (file://)" "$bs" --jobs "$work/jobs" -q backup file
measure "backstop backup (s3, moto)" "$bs" --jobs "$work/jobs" -q backup s3
measure "backstop restore (file://)" "$bs" --jobs "$work/jobs" -q restore file --to "$url/restored_file"
measure "backstop restore (s3, moto)" "$bs" --jobs "$work/jobs" -q restore s3 --to "$url/restored_s3"

# Restore drill (scratch cluster) and how a restore splits: reading the stored bytes,
# decrypting and decompressing them, pg_restore.
measure "backstop verify (drill, file://)" "$bs" --jobs "$work/jobs" -q verify file
snapdir=$(ls -d "$work/store/file/"*/ | head -n1)
measure "read the stored dump (cat)" bash -c "cat '$snapdir/dump.zst.age' > /dev/null"
measure "decrypt + decompress (age|zstd)" bash -c "set -o pipefail; age -d -i '$work/key.txt' '$snapdir/dump.zst.age' | zstd -q -d > /dev/null"

# Row counts: from the dump stream (what backstop does) versus a second scan.
age -d -i "$work/key.txt" "$work/oneliner.age" | zstd -q -d > "$work/dump.raw"
measure "row counts from the dump stream" bash -c "'$root/target/release/examples/count_rows' < '$work/dump.raw'"
tables=$("$bin/psql" -X -At -d "$url/bench" -c "SELECT string_agg(format('SELECT count(*) FROM %I.%I', schemaname, tablename), ' UNION ALL ') FROM pg_tables WHERE schemaname = 'public'")
measure "row counts by count(*) (second scan)" "$bin/psql" -X -q -d "$url/bench" -c "$tables"
rm -f "$work/dump.raw"

plain=$("$bs" --jobs "$work/jobs" --json list file | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["plaintext_bytes"])')
stored=$("$bs" --jobs "$work/jobs" --json list file | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stored_bytes"])')
oneliner=$(stat -c %s "$work/oneliner.age")
same=$("$bin/psql" -X -At -d "$url/bench" -c "SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a")
back=$("$bin/psql" -X -At -d "$url/restored_s3" -c "SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a")

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $dataset data, scale $scale, database $dbsize"
echo "dump (plaintext) $(numfmt --to=iec-i --suffix=B "$plain"), stored $(numfmt --to=iec-i --suffix=B "$stored") (one-liner: $(numfmt --to=iec-i --suffix=B "$oneliner"))"
printf '%-36s %10s %10s %12s\n' "run" "wall" "cpu" "peak RSS"
printf '%s\n' "${results[@]}"
python3 - "$work/state/audit.log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["action"] == "restore" and r["result"] == "ok":
        d = r["details"]
        print(f"restore {r['job']}: download+check+decrypt {d['download_ms']/1000:.1f} s, pg_restore {d['restore_ms']/1000:.1f} s")
    if r["action"] == "verify" and r["result"] == "ok":
        d = r["details"]
        print(f"drill {r['job']}: restore {d['restore_ms']/1000:.1f} s (download+check+decrypt {d['download_ms']/1000:.1f} s, "
              f"pg_restore {d['apply_ms']/1000:.1f} s), checks {d['checks_passed']}, whole drill {d['duration_ms']/1000:.1f} s")
PY
[ "$same" = "$back" ] && echo "restored pgbench_accounts matches the source" || { echo "restored data differs!" >&2; exit 1; }
