#!/usr/bin/env bash
# Benchmarks backstop against what users would use instead, side by side in one run on one
# machine, each contender repeated (alternating order) and reported as the median:
#   - the source limit:  pg_dump -Fc --compress=0 > /dev/null
#   - the same into a pipe: pg_dump -Fc --compress=0 | cat > /dev/null (measured faster:
#     a reader that is not instant lets the server send bigger batches)
#   - the one-liner:     pg_dump -Fc --compress=0 | zstd -3 -T0 | age -r KEY | aws s3 cp - s3://...
#   - restic:            pg_dump -Fc --compress=0 | restic backup --stdin   (S3 repository)
#   - backstop backup    into S3 and into file://
#   - the S3 server's raw upload rate for the same bytes (aws s3 cp of the one-liner's output)
#   - restores: aws s3 cp - | age -d | zstd -d | pg_restore   versus   backstop restore (S3),
#     and age -d FILE | zstd -d | pg_restore   versus   backstop restore (file://)
# For each: wall time, CPU time (user+sys of every process), peak RSS (largest process),
# bytes stored. The database comes from pgbench -i -s SCALE in a throwaway cluster; S3 is a
# local moto server. Volumes: scripts/bench-volume.sh.
#
#   scripts/bench.sh [--scale N] [--quick] [--runs N] [--dataset pgbench|text|app|star|many|blobs|two|docs|indexes|parts|files|events|orders|narrow|mid]
#   scripts/bench.sh --shapes "pgbench:20 app:10 many:10" [--runs N]   # several shapes, one run
#   scripts/bench.sh --dataset app --scaling "5 10 20"   # one shape at three sizes, file://
#   scripts/bench.sh --shapes "app many" --scaling "5 10 20"   # each shape at three sizes
#
# Default scale 100 (a dump of about 1 GB). Shapes: `pgbench` (one table holds almost every
# row; mostly blank padding, compresses about 100:1); `text` (one table of digests and
# JSON, about 2:1); `app` (an application's schema: 20 tables of comparable size with
# secondary indexes, foreign keys, an enum, a domain, a generated column, jsonb, arrays,
# bytea and large objects; about 100,000 rows per unit of scale); `many` (2,000 small
# tables with a primary key and an index each; scale x 10 rows per table); `docs` (SCALE x
# 6,000 jsonb documents of 80 keys, with a B-tree index and a GIN index on the documents:
# the GIN build, single-threaded, is most of a restore); `indexes` (SCALE x 100,000 rows in
# one table with six secondary indexes and a foreign key: building them is most of a
# restore); `parts` (SCALE x 100,000 orders in a table partitioned by month into 24
# partitions, with a composite key, two indexes and a foreign key to SCALE x 5,000
# customers); `files` (SCALE x 15 rows of 512 KiB of incompressible bytea beside SCALE x
# 5,000 small rows: few rows, each big); `star` (a TPC-H-like decision-support schema: SCALE x
# 60,000 line items, about 70% of the rows, with a composite key, two indexes and two
# foreign keys, beside orders, parts, suppliers and customers with keys and indexes);
# `events` (an event log: SCALE x 75,000 rows of bigint, timestamptz, inet, text[],
# interval, int[] and time, with an index on the time stamp); `orders` (a shop's four
# tables of comparable size, about a million rows per unit of scale: accounts, orders with
# a key, three B-trees and a GIN index on a tsvector, their events and an audit log, two
# foreign keys and a materialized view); `narrow` (SCALE x 500,000 rows of two integers with a
# key: the most rows per byte); `mid` (200 tables of SCALE x 2,000 rows with a key and an
# index each: between `many` and `app`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scale=100
runs=3
dataset=pgbench
scaling=
shapes=
while [ $# -gt 0 ]; do
  case "$1" in
    --shapes) shapes=$2; shift 2 ;;
    --dataset) dataset=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --quick) scale=5; runs=1; shift ;;
    --scaling) scaling=$2; shift 2 ;;
    *) echo "usage: $0 [--scale N] [--quick] [--runs N] [--dataset pgbench|text|app|star|many|blobs|two|docs|indexes|parts|files|events|orders|narrow|mid] [--shapes \"SHAPE:SCALE ...\"] [--scaling \"S1 S2 S3\"]" >&2; exit 2 ;;
  esac
done
if [ -n "$shapes" ]; then
  # Each shape in turn, same contenders, same machine, one invocation.
  for s in $shapes; do
    if [ -n "$scaling" ]; then
      # --scaling with --shapes: each shape at the sizes given (SHAPE:SCALE's scale unused).
      echo "=== shape ${s%%:*}, scales $scaling ==="
      bash "$0" --dataset "${s%%:*}" --scaling "$scaling" --runs "$runs"
    else
      echo "=== shape ${s%%:*}, scale ${s##*:} ==="
      bash "$0" --dataset "${s%%:*}" --scale "${s##*:}" --runs "$runs"
    fi
  done
  exit 0
fi

bash scripts/install-deps.sh >/dev/null
# The contenders' tools: restic from Debian, the aws CLI in the project's venv.
if ! command -v restic >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq restic >/dev/null
fi
[ -x "$root/.venv-s3/bin/aws" ] || "$root/.venv-s3/bin/pip" install -q awscli
aws="$root/.venv-s3/bin/aws"
cargo build --release --locked -q --bin backstop
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
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

load() { # load DB SCALE
  psql -d "$url/postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  case "$dataset" in
    pgbench) "$bin/pgbench" -i -q -s "$2" "$url/$1" >/dev/null 2>&1 ;;
    text)
      psql -d "$url/$1" -c "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, a text, b text, doc jsonb)"
      psql -d "$url/$1" -c "INSERT INTO pgbench_accounts SELECT g, md5(g::text) || md5((g*7)::text), md5((g*13)::text), jsonb_build_object('n', g, 'h', left(md5((g*3)::text), 12)) FROM generate_series(1, $2 * 65000) g"
      ;;
    app) psql -d "$url/$1" -v s="$2" -f "$root/scripts/bench-app-shape.sql" >/dev/null ;;
    orders) psql -d "$url/$1" -v s="$2" -f "$root/scripts/bench-orders-shape.sql" >/dev/null ;;
    star) psql -d "$url/$1" -v s="$2" -f "$root/scripts/bench-star-shape.sql" >/dev/null ;;
    many)
      psql -d "$url/$1" -c "DO \$\$ BEGIN FOR i IN 1..2000 LOOP
        EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, name text, n bigint, at timestamptz)', i);
        EXECUTE format('INSERT INTO t%s SELECT g, md5((g * %s)::text), g * 7, ''2026-01-01''::timestamptz + g * interval ''1 minute'' FROM generate_series(1, %s) g', i, i, $2 * 10);
        EXECUTE format('CREATE INDEX t%s_n ON t%s (n)', i, i);
      END LOOP; END \$\$;" >/dev/null
      ;;
    blobs) # the weight in large objects: SCALE x 1,500 of 0.6-3.8 KiB, beside SCALE x 20,000 rows
      psql -d "$url/$1" -c "CREATE TABLE docs (id int PRIMARY KEY, title text, body oid)" \
        -c "INSERT INTO docs SELECT g, md5(g::text), lo_from_bytea(0, decode(repeat(md5(g::text), 40 + g % 200), 'hex')) FROM generate_series(1, $2 * 1500) g" \
        -c "CREATE TABLE meta (id int PRIMARY KEY, k text, v text)" \
        -c "INSERT INTO meta SELECT g, 'k' || g, repeat('v', 50) FROM generate_series(1, $2 * 20000) g" >/dev/null
      ;;
    two) # two big tables of comparable size: SCALE x 5,000 rows of 1.9 KiB, SCALE x 150,000 narrow rows with an index
      psql -d "$url/$1" -c "CREATE TABLE a (id int PRIMARY KEY, body text)" \
        -c "INSERT INTO a SELECT g, (SELECT string_agg(md5((g * 100 + k)::text), '') FROM generate_series(1, 60) k) FROM generate_series(1, $2 * 5000) g" \
        -c "CREATE TABLE b (id int PRIMARY KEY, ref int, note text, at timestamptz)" \
        -c "INSERT INTO b SELECT g, (g::bigint * 7919) % ($2 * 5000) + 1, left(md5(g::text), 16), '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, $2 * 150000) g" \
        -c "CREATE INDEX b_ref ON b (ref)" >/dev/null
      ;;
    docs) # jsonb documents with a GIN index: SCALE x 6,000 of 80 keys each (about 5 KiB)
      psql -d "$url/$1" -c "CREATE TABLE docs (id bigint PRIMARY KEY, kind text, doc jsonb, created timestamptz)" \
        -c "INSERT INTO docs SELECT g, 'k' || (g % 17), (SELECT jsonb_object_agg('f' || k, md5((g * 31 + k)::text) || repeat('x', k % 40)) FROM generate_series(1, 80) k), '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, $2 * 6000) g" \
        -c "CREATE INDEX docs_kind ON docs (kind, created)" \
        -c "CREATE INDEX docs_doc ON docs USING gin (doc jsonb_path_ops)" >/dev/null
      ;;
    indexes) # the indexes are most of a restore: SCALE x 100,000 events with six secondary
      # indexes (B-tree on an int, text + timestamptz, timestamptz, numeric and a unique
      # digest; GIN on an array) and a foreign key to 50,000 users
      psql -d "$url/$1" -c "CREATE TABLE users (id int PRIMARY KEY, name text)" \
        -c "INSERT INTO users SELECT g, 'u' || g FROM generate_series(0, 49999) g" \
        -c "CREATE TABLE ev (id bigint PRIMARY KEY, user_id int NOT NULL REFERENCES users, kind text NOT NULL, at timestamptz NOT NULL, amount numeric(12,2), tags text[], note text)" \
        -c "INSERT INTO ev SELECT g, (g::bigint * 7919) % 50000, 'k' || (g % 23), '2026-01-01'::timestamptz + (g::bigint * 37 % 1000000) * interval '1 second', (g % 10000) / 100.0, ARRAY['t' || (g % 5), 'u' || (g % 11)], md5(g::text) FROM generate_series(1, $2 * 100000) g" \
        -c "CREATE INDEX ON ev (user_id)" -c "CREATE INDEX ON ev (kind, at)" -c "CREATE INDEX ON ev (at)" \
        -c "CREATE INDEX ON ev (amount)" -c "CREATE INDEX ON ev USING gin (tags)" -c "CREATE UNIQUE INDEX ON ev (note)" >/dev/null
      ;;
    parts) # a partitioned table: SCALE x 100,000 orders over 24 monthly partitions with a
      # composite key, two indexes and a foreign key to SCALE x 5,000 customers
      psql -d "$url/$1" -c "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text UNIQUE, created date)" \
        -c "INSERT INTO customers SELECT g, 'c' || g, 'c' || g || '@example.com', '2024-01-01'::date + g % 700 FROM generate_series(1, $2 * 5000) g" \
        -c "CREATE TABLE orders (id bigint, customer_id int NOT NULL REFERENCES customers, created timestamptz NOT NULL, total numeric(12,2), status text, PRIMARY KEY (id, created)) PARTITION BY RANGE (created)" \
        -c "DO \$\$ BEGIN FOR m IN 0..23 LOOP EXECUTE format('CREATE TABLE orders_%s PARTITION OF orders FOR VALUES FROM (%L) TO (%L)', m, '2024-01-01'::date + make_interval(months => m), '2024-01-01'::date + make_interval(months => m + 1)); END LOOP; END \$\$" \
        -c "CREATE INDEX ON orders (customer_id)" -c "CREATE INDEX ON orders (status, created)" \
        -c "INSERT INTO orders SELECT g, 1 + (g::bigint * 7919) % ($2 * 5000), '2024-01-01'::timestamptz + (g::bigint * 62000000 / ($2 * 100000)) * interval '1 second', (g % 50000) / 100.0, (ARRAY['new','paid','shipped','done'])[1 + g % 4] FROM generate_series(1, $2 * 100000) g" >/dev/null
      ;;
    files) # few rows, each big: SCALE x 15 files of 512 KiB (incompressible bytea, twice that
      # as COPY text) beside SCALE x 5,000 rows of metadata referring to them
      psql -d "$url/$1" -c "CREATE TABLE files (id int PRIMARY KEY, name text, body bytea)" \
        -c "INSERT INTO files SELECT g, 'f' || g, (SELECT string_agg(sha512((g * 100000 + k)::text::bytea), ''::bytea) FROM generate_series(1, 8192) k) FROM generate_series(1, $2 * 15) g" \
        -c "CREATE TABLE meta (id int PRIMARY KEY, file_id int REFERENCES files, k text, v text)" \
        -c "INSERT INTO meta SELECT g, 1 + g % ($2 * 15), 'k' || g, md5(g::text) FROM generate_series(1, $2 * 5000) g" >/dev/null
      ;;
    events) # an event log: one table of addresses, arrays, intervals and times
      psql -d "$url/$1" -c "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, ip inet, tags text[], dur interval, vals int[], t time)" \
        -c "INSERT INTO events SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1.5 seconds', ('10.' || g % 256 || '.' || g % 199 || '.' || g % 251)::inet, ARRAY['tag' || g % 17, 'k' || g % 5], make_interval(0, 0, 0, g % 3, g % 24, g % 60, (g % 6000) / 100.0), ARRAY[g % 1000, g % 77, g], time '00:00:00' + g * interval '1.25 seconds' FROM generate_series(1, $2 * 75000) g" \
        -c "CREATE INDEX events_at ON events (at)" >/dev/null
      ;;
    narrow) # the most rows per byte: SCALE x 500,000 rows of two integers with a key (per-row
      # costs: parsing, dealing out, the key's sort), beside 1,000 small rows
      psql -d "$url/$1" -c "CREATE TABLE pairs (a int PRIMARY KEY, b int)" \
        -c "INSERT INTO pairs SELECT g, g % 1000 FROM generate_series(1, $2 * 500000) g" \
        -c "CREATE TABLE small (id int PRIMARY KEY, v text)" \
        -c "INSERT INTO small SELECT g, 'v' || g FROM generate_series(1, 1000) g" >/dev/null
      ;;
    mid) # between many and app: 200 tables of SCALE x 2,000 rows each (a key, an indexed
      # bigint, text, timestamptz, numeric), none big enough to stream
      psql -d "$url/$1" -c "DO \$\$ BEGIN FOR i IN 1..200 LOOP
        EXECUTE format('CREATE TABLE m%s (id int PRIMARY KEY, a bigint, t text, ts timestamptz, n numeric)', i);
        EXECUTE format('INSERT INTO m%s SELECT g, g * 31 + %s, md5((g * 1000 + %s)::text), ''2026-01-01''::timestamptz - (g * 7 + %s) * interval ''1 second'', (g + %s) / 3.0 FROM generate_series(1, %s) g', i, i, i, i, i, $2 * 2000);
        EXECUTE format('CREATE INDEX m%s_a ON m%s (a)', i, i);
      END LOOP; END \$\$;" >/dev/null
      ;;
    *) echo "unknown dataset $dataset (pgbench, text, app, star, many, blobs, two, docs, indexes, parts, files, events, orders, narrow, mid)" >&2; exit 2 ;;
  esac
  psql -d "$url/$1" -c "VACUUM ANALYZE"
}

age-keygen -o "$work/key.txt" 2>/dev/null
recip=$(age-keygen -y "$work/key.txt")
export BACKSTOP_STATE_DIR="$work/state"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
mkdir -p "$work/jobs"
job() { # job NAME STORAGE-LINES
  cat > "$work/jobs/$1.toml" <<TOML
[source]
type = "postgres"
url = "$url/bench"
[storage]
$2
[encryption]
recipients = ["$recip"]
identity_file = "$work/key.txt"
[compression]
level = 3
TOML
}

# measure NAME CMD...: appends "NAME wall cpu rss_kib" to $work/results
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { echo "$name failed:" >&2; cat "$work/err" >&2; exit 1; }
  read -r wall user sys rss < "$work/time"
  printf '%s\t%s\t%s\t%s\n' "$name" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "$rss" >> "$work/results"
}

settle() {
  psql -d "$url/postgres" -c "CHECKPOINT"
  sync
  [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches
  sleep 1
}
# Every table's row count and the md5 of its rows in order, and the large objects.
check() {
  "$bin/psql" -X -At -d "$url/$1" <<'SQL' | md5sum
SELECT format('SELECT %L, count(*), md5(coalesce(string_agg(x::text, %L ORDER BY x::text), %L)) FROM %I.%I x', schemaname || '.' || tablename, ',', '', schemaname, tablename)
FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY schemaname, tablename \gexec
SELECT count(*), md5(coalesce(string_agg(md5(data), ',' ORDER BY loid, pageno), '')) FROM pg_largeobject;
SQL
}

if [ -n "$scaling" ]; then
  # Scaling: the same shape at several sizes, file:// only (the storage is not measured):
  # the one-liner and backstop backup, the naive pipe and backstop restore, each restore
  # compared with the source; medians of --runs.
  job file "url = \"file://$work/store\""
  : > "$work/scaling"
  for s in $scaling; do
    echo "loading $dataset data, scale $s ..." >&2
    load bench "$s"
    rm -rf "$work/store" "$work/results"
    src_sum=$(check bench)
    for ((r = 1; r <= runs; r++)); do
      measure "one-liner" bash -c "set -o pipefail; '$bin/pg_dump' -Fc --compress=0 -d '$url/bench' | zstd -q -3 -T0 | age -r $recip > '$work/oneliner.age'"
      measure "backup" "$bs" --jobs "$work/jobs" -q backup file
      psql -d "$url/postgres" -c "DROP DATABASE IF EXISTS naive" -c "DROP DATABASE IF EXISTS restored" -c "CREATE DATABASE naive"
      settle
      measure "naive" bash -c "set -o pipefail; age -d -i '$work/key.txt' '$work/oneliner.age' | zstd -q -d | '$bin/pg_restore' --no-owner -d '$url/naive'"
      settle
      measure "restore" "$bs" --jobs "$work/jobs" -q restore file --to "$url/restored"
      [ "$(check restored)" = "$src_sum" ] || { echo "backstop restore differs from the source (scale $s)!" >&2; exit 1; }
      [ "$(check naive)" = "$src_sum" ] || { echo "naive restore differs from the source (scale $s)!" >&2; exit 1; }
    done
    plain=$("$bs" --jobs "$work/jobs" --json list file | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["plaintext_bytes"])')
    dbsize=$("$bin/psql" -X -At -d "$url/bench" -c "SELECT pg_database_size('bench')")
    sed "s/^/$s\t$plain\t$dbsize\t/" "$work/results" >> "$work/scaling"
  done
  echo
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $dataset data; file:// storage; median of $runs; every restore matches the source"
  python3 - "$work/scaling" <<'PY'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    s, plain, db, name, wall, cpu, rss = line.rstrip("\n").split("\t")
    rows.setdefault((s, int(plain), int(db)), collections.defaultdict(list))[name].append((float(wall), int(rss)))
med = lambda v: statistics.median(w for w, _ in v)
print(f"{'scale':>6} {'database':>9} {'dump':>9} | {'one-liner':>9} {'backup':>7} {'x':>5} | {'naive':>7} {'restore':>7} {'x':>5} | {'restore s/GiB db':>16} {'peak RSS':>9}")
for (s, plain, db), m in rows.items():
    ol, bk, nv, rs = med(m["one-liner"]), med(m["backup"]), med(m["naive"]), med(m["restore"])
    rss = max(r for k in ("backup", "restore") for _, r in m[k])
    print(f"{s:>6} {db / 2**20:>6.0f} MiB {plain / 2**20:>5.0f} MiB | {ol:>7.2f} s {bk:>5.2f} s {bk / ol:>5.2f} | {nv:>5.2f} s {rs:>5.2f} s {rs / nv:>5.2f} | {rs / (db / 2**30):>14.1f} s {rss / 1024:>5.0f} MiB")
PY
  exit 0
fi

echo "loading $dataset data, scale $scale ..." >&2
load bench "$scale"
dbsize=$("$bin/psql" -X -At -d "$url/bench" -c "SELECT pg_size_pretty(pg_database_size('bench'))")

"$root/.venv-s3/bin/moto_server" -H 127.0.0.1 -p "$s3port" >/dev/null 2>&1 &
moto_pid=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$s3port) 2>/dev/null && break; sleep 0.1; done
ep="http://127.0.0.1:$s3port"
"$aws" --endpoint-url "$ep" s3 mb s3://bench >/dev/null
# backstop's snapshots get a bucket of their own, as a deployment's would: moto answers a
# version listing (which every restore from S3 makes) by deep-copying every object in the
# bucket, so the other contenders' uploads (about 10 dumps and a restic repository) would
# make backstop's restore wait seconds for a listing that real S3 answers in milliseconds.
"$aws" --endpoint-url "$ep" s3 mb s3://backstop >/dev/null
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="s3:$ep/bench/restic"
restic init -q >/dev/null
job file "url = \"file://$work/store\""
job s3 "url = \"s3://backstop/bench\"
endpoint = \"$ep\"
path_style = true"

dump="'$bin/pg_dump' -Fc --compress=0 -d '$url/bench'"
# Rounds: every contender once per round, the order rotated each round.
contenders=(source pipe oneliner restic backstop_s3 backstop_file)
for ((r = 1; r <= runs; r++)); do
  echo "round $r of $runs ..." >&2
  n=${#contenders[@]}
  for ((k = 0; k < n; k++)); do
    c=${contenders[$(((k + r - 1) % n))]}
    case $c in
      source) measure "source limit: pg_dump -Fc >/dev/null" bash -c "$dump > /dev/null" ;;
      pipe) measure "pg_dump -Fc | cat >/dev/null (a pipe)" bash -c "set -o pipefail; $dump | cat > /dev/null" ;;
      oneliner) measure "one-liner: pg_dump|zstd|age|aws s3 cp" bash -c "set -o pipefail; $dump | zstd -q -3 -T0 | age -r $recip | '$aws' --endpoint-url $ep s3 cp - s3://bench/oneliner/dump-$r.age" ;;
      restic) measure "restic backup --stdin (S3)" bash -c "set -o pipefail; $dump | restic backup -q --stdin --stdin-filename bench.pgdump" ;;
      backstop_s3) measure "backstop backup (S3)" "$bs" --jobs "$work/jobs" -q backup s3 ;;
      backstop_file) measure "backstop backup (file://)" "$bs" --jobs "$work/jobs" -q backup file ;;
    esac
  done
done
# The S3 server's own rate for the same bytes.
"$aws" --endpoint-url "$ep" s3 cp s3://bench/oneliner/dump-1.age "$work/oneliner.age" >/dev/null
for ((r = 1; r <= runs; r++)); do
  measure "S3 server: aws s3 cp of the same bytes" "$aws" --endpoint-url "$ep" s3 cp "$work/oneliner.age" "s3://bench/raw/dump-$r.age"
done
# Restores into empty databases, alternating. Each starts from a settled server and disk
# (CHECKPOINT, sync, and as root the page cache dropped): otherwise the previous restore's
# writeback, and a page cache filled by the earlier ones, land on the next (measured: a
# restore took 9 s on a fresh machine, 13-14 s once the page cache was full, for both).
# Each restore is compared with the source and dropped right after it is measured, so no
# autovacuum of an earlier restore runs beside a later one (it took the core a one-session
# restore leaves idle, and one of the two a parallel restore uses).
src_sum=$(check bench)
checked() { # checked DB WHAT: compare with the source, then drop
  [ "$(check "$1")" = "$src_sum" ] || { echo "$2 differs from the source!" >&2; exit 1; }
  psql -d "$url/postgres" -c "DROP DATABASE $1"
}
for ((r = 1; r <= runs; r++)); do
  echo "restore round $r of $runs ..." >&2
  psql -d "$url/postgres" -c "CREATE DATABASE naive_$r" -c "CREATE DATABASE naivefile_$r"
  naive() { settle; measure "naive restore: aws s3 cp|age -d|zstd -d|pg_restore" bash -c "set -o pipefail; '$aws' --endpoint-url $ep s3 cp s3://bench/oneliner/dump-1.age - | age -d -i '$work/key.txt' | zstd -q -d | '$bin/pg_restore' --no-owner -d '$url/naive_$r'"; checked "naive_$r" "naive restore $r"; }
  ours() { settle; measure "backstop restore (S3)" "$bs" --jobs "$work/jobs" -q restore s3 --to "$url/restored_$r"; checked "restored_$r" "backstop restore $r"; }
  naivefile() { settle; measure "naive restore from a file: age -d|zstd -d|pg_restore" bash -c "set -o pipefail; age -d -i '$work/key.txt' '$work/oneliner.age' | zstd -q -d | '$bin/pg_restore' --no-owner -d '$url/naivefile_$r'"; checked "naivefile_$r" "naive restore from a file $r"; }
  oursfile() { settle; measure "backstop restore (file://)" "$bs" --jobs "$work/jobs" -q restore file --to "$url/restoredfile_$r"; checked "restoredfile_$r" "backstop restore (file://) $r"; }
  if [ $((r % 2)) -eq 1 ]; then naive; ours; naivefile; oursfile; else oursfile; naivefile; ours; naive; fi
done

stored=$("$bs" --jobs "$work/jobs" --json list s3 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stored_bytes"])')
plain=$("$bs" --jobs "$work/jobs" --json list s3 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["plaintext_bytes"])')
oneliner=$(stat -c %s "$work/oneliner.age")
restic_stored=$(restic stats -q --mode raw-data --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_size"])')

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; $dataset data, scale $scale, database $dbsize, dump $(numfmt --to=iec-i --suffix=B "$plain"); median of $runs"
python3 - "$work/results" "$stored" "$oneliner" "$restic_stored" <<'PY'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    name, wall, cpu, rss = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((float(wall), float(cpu), int(rss)))
stored, oneliner, restic = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
med = {n: (statistics.median(w for w, _, _ in v), statistics.median(c for _, c, _ in v), max(r for _, _, r in v)) for n, v in rows.items()}
src = med["source limit: pg_dump -Fc >/dev/null"][0]
one = med["one-liner: pg_dump|zstd|age|aws s3 cp"][0]
naive = med["naive restore: aws s3 cp|age -d|zstd -d|pg_restore"][0]
naivefile = med["naive restore from a file: age -d|zstd -d|pg_restore"][0]
size = {"one-liner: pg_dump|zstd|age|aws s3 cp": oneliner, "restic backup --stdin (S3)": restic,
        "backstop backup (S3)": stored, "backstop backup (file://)": stored}
mib = lambda b: f"{b / 2**20:.1f} MiB"
print(f"{'run':<52} {'wall':>7} {'cpu':>7} {'peak RSS':>9} {'stored':>11} {'x 1-liner':>9} {'x source':>8}")
for n, (w, c, r) in med.items():
    base = naivefile if "file" in n else naive
    ratio = f"{w / base:.2f}x naive" if "restore" in n else f"{w / one:>8.2f}"
    print(f"{n:<52} {w:>5.1f} s {c:>5.1f} s {r / 1024:>5.0f} MiB {mib(size[n]) if n in size else '':>11} {ratio:>9} {w / src:>8.2f}")
b = med["backstop backup (S3)"]
bf = med["backstop backup (file://)"]
rs = med["backstop restore (S3)"]
rf = med["backstop restore (file://)"]
print()
print("targets:")
print(f"  backup (S3) <= 0.95x one-liner:    {b[0] / one:.2f}x  {'met' if b[0] <= 0.95 * one else 'MISSED'}  (file://: {bf[0] / one:.2f}x)")
print(f"  restore (S3) <= 0.8x naive pipe:   {rs[0] / naive:.2f}x  {'met' if rs[0] <= 0.8 * naive else 'MISSED'}")
print(f"  restore (file://) <= 0.8x naive:   {rf[0] / naivefile:.2f}x  {'met' if rf[0] <= 0.8 * naivefile else 'MISSED'}")
peak = max(b[2], bf[2], rs[2], rf[2])
print(f"  peak RSS <= 128 MiB:               {peak / 1024:.0f} MiB  {'met' if peak <= 128 * 1024 else 'MISSED'}")
print(f"  stored within 2% of the one-liner: {100 * (stored - oneliner) / oneliner:+.2f}%  {'met' if stored <= 1.02 * oneliner else 'MISSED'}")
print(f"  (backup against the source limit: {b[0] / src:.2f}x)")
PY
echo "every restore (backstop and naive) matches the source: every table's count and md5 of its rows, large objects"
