#!/usr/bin/env bash
# The cost of a second storage: `backstop backup` of one database into one storage and
# into two at once (fan-out: encoded once, written to both), same machine, same run,
# rounds with the order rotated, medians reported. Wall time and peak RSS.
#   - file:// x1 vs file:// x2 (two directories): no server in the way
#   - S3 x1 vs S3 x2 (two moto servers on loopback): note that the servers run on the same
#     cores as backstop here, so a second server also takes CPU from the backup itself
#   - file:// + S3 (the "fast local copy plus off-site copy" layout)
#
#   scripts/bench-storages.sh [--dataset pgbench|app|text] [--scale N] [--runs N]
# (pgbench compresses about 100:1, so the storages see little; `text` is about 2:1.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scale=20
runs=3
dataset=pgbench
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --dataset) dataset=$2; shift 2 ;;
    *) echo "usage: $0 [--dataset pgbench|app|text] [--scale N] [--runs N]" >&2; exit 2 ;;
  esac
done
bash scripts/install-deps.sh >/dev/null
[ -x "$root/.venv-s3/bin/aws" ] || "$root/.venv-s3/bin/pip" install -q awscli
aws="$root/.venv-s3/bin/aws"
cargo build --release --locked -q --bin backstop
bs="$root/target/release/backstop"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
work=$(mktemp -d /tmp/backstop-bench-storages.XXXXXX)
chmod 755 "$work"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport)
pa=$(freeport)
pb=$(freeport)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash "$root/scripts/pg-scratch.sh" stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/pg-scratch.sh start "$work/pg" "$port"
url="postgres://postgres@127.0.0.1:$port"
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d "$url/postgres" -c "CREATE DATABASE bench"
case "$dataset" in
  pgbench) "$bin/pgbench" -i -q -s "$scale" "$url/bench" >/dev/null 2>&1 ;;
  app) psql -d "$url/bench" -v s="$scale" -f "$root/scripts/bench-app-shape.sql" >/dev/null ;;
  text)
    psql -d "$url/bench" -c "CREATE TABLE t (id int PRIMARY KEY, a text, b text, doc jsonb)"
    psql -d "$url/bench" -c "INSERT INTO t SELECT g, md5(g::text) || md5((g*7)::text), md5((g*13)::text), jsonb_build_object('n', g, 'h', left(md5((g*3)::text), 12)) FROM generate_series(1, $scale * 65000) g"
    ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
psql -d "$url/bench" -c "VACUUM ANALYZE"
dbsize=$("$bin/psql" -X -At -d "$url/bench" -c "SELECT pg_size_pretty(pg_database_size('bench'))")

for p in "$pa" "$pb"; do
  "$root/.venv-s3/bin/moto_server" -H 127.0.0.1 -p "$p" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$aws" --endpoint-url "http://127.0.0.1:$pa" s3 mb s3://one >/dev/null
"$aws" --endpoint-url "http://127.0.0.1:$pb" s3 mb s3://two >/dev/null

age-keygen -o "$work/key.txt" 2>/dev/null
recip=$(age-keygen -y "$work/key.txt")
export BACKSTOP_STATE_DIR="$work/state"
mkdir -p "$work/jobs"
s3() { # s3 NAME PORT BUCKET
  printf '[[storage]]\nname = "%s"\nurl = "s3://%s/b"\nendpoint = "http://127.0.0.1:%s"\npath_style = true\n' "$1" "$3" "$2"
}
file() { # file NAME DIR
  printf '[[storage]]\nname = "%s"\nurl = "file://%s"\n' "$1" "$2"
}
job() { # job NAME STORAGE-TABLES
  { printf '[source]\ntype = "postgres"\nurl = "%s/bench"\n' "$url"
    printf '%s\n' "$2"
    printf '[encryption]\nrecipients = ["%s"]\n[compression]\nlevel = 3\n' "$recip"
  } > "$work/jobs/$1.toml"
}
job file1 "$(file a "$work/fa")"
job file2 "$(file a "$work/fa"; file b "$work/fb")"
job s3x1 "$(s3 a "$pa" one)"
job s3x2 "$(s3 a "$pa" one; s3 b "$pb" two)"
job mixed "$(file local "$work/fl"; s3 offsite "$pa" one)"

measure() { # measure NAME CMD...: appends "NAME wall rss_kib" to $work/results
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { echo "$name failed:" >&2; cat "$work/err" >&2; exit 1; }
  read -r wall rss < "$work/time"
  printf '%s\t%s\t%s\n' "$name" "$wall" "$rss" >> "$work/results"
}

contenders=(file1 file2 s3x1 s3x2 mixed)
for ((r = 1; r <= runs; r++)); do
  echo "round $r of $runs ..." >&2
  n=${#contenders[@]}
  for ((k = 0; k < n; k++)); do
    c=${contenders[$(((k + r - 1) % n))]}
    sync
    measure "$c" "$bs" --jobs "$work/jobs" -q backup "$c"
  done
done
stored=$("$bs" --jobs "$work/jobs" --json list file1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stored_bytes"])')

echo
echo "machine: $(nproc) cores; $dataset scale $scale ($dbsize database, $((stored / 1048576)) MiB stored per snapshot); medians of $runs"
python3 - "$work/results" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    n, w, r = line.rstrip("\n").split("\t")
    rows.setdefault(n, []).append((float(w), int(r)))
med = {n: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for n, v in rows.items()}
label = {"file1": "file:// x1", "file2": "file:// x2", "s3x1": "S3 (moto) x1", "s3x2": "S3 (moto) x2", "mixed": "file:// + S3"}
base = {"file2": "file1", "s3x2": "s3x1", "mixed": "s3x1"}
print(f"{'storages':<16} {'wall':>8} {'peak RSS':>9}  {'vs one':>7}")
for n in ["file1", "file2", "s3x1", "s3x2", "mixed"]:
    w, r = med[n]
    rel = f"{w / med[base[n]][0]:.2f}x" if n in base else ""
    print(f"{label[n]:<16} {w:>6.2f} s {r / 1024:>5.0f} MiB  {rel:>7}")
PY
