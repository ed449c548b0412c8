#!/usr/bin/env bash
# The main job on the embedded default, end to end: a throwaway local PostgreSQL cluster
# with a small bookings database, a `file://` store, an age key pair; then backup, wipe
# the database, one-command restore, and a comparison of the data before and after.
# Leaves nothing running; the work directory is removed unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/install-deps.sh >/dev/null
cargo build --release --locked -q
bs="$root/target/release/backstop"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)

work=$(mktemp -d /tmp/backstop-demo.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { bash "$root/scripts/pg-scratch.sh" stop "$work/pg"; [ "${KEEP:-0}" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
psql_() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }

say "a throwaway PostgreSQL cluster on 127.0.0.1:$port"
bash scripts/pg-scratch.sh start "$work/pg" "$port"
psql_ -d postgres -c "CREATE DATABASE app"
psql_ -d app <<'SQL'
CREATE TABLE bookings (id bigserial PRIMARY KEY, guest text NOT NULL, nights int, doc jsonb, at timestamptz DEFAULT now());
INSERT INTO bookings (guest, nights, doc)
  SELECT 'guest ' || g, 1 + g % 14, jsonb_build_object('room', g % 300, 'tags', jsonb_build_array('a', g))
  FROM generate_series(1, 200000) g;
CREATE TABLE invoices (booking_id bigint REFERENCES bookings, amount numeric(10,2));
INSERT INTO invoices SELECT id, nights * 89.5 FROM bookings;
SQL
fingerprint() {
  psql_ -d app -At -c "SELECT 'bookings', count(*), md5(string_agg(b::text, ',' ORDER BY id)) FROM bookings b
                       UNION ALL SELECT 'invoices', count(*), md5(string_agg(i::text, ',' ORDER BY booking_id)) FROM invoices i"
}
before=$(fingerprint)
echo "$before"

say "an age key pair and the job file (storage: file://$work/store)"
age-keygen -o "$work/restore.key" 2>/dev/null
mkdir -p "$work/jobs"
cat > "$work/jobs/app.toml" <<TOML
environment = "production"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$port/app"

[storage]
url = "file://$work/store"

[encryption]
recipients = ["$(age-keygen -y "$work/restore.key")"]
identity_file = "$work/restore.key"
TOML
cat "$work/jobs/app.toml"
export BACKSTOP_STATE_DIR="$work/state"

say "backstop backup app"
"$bs" --jobs "$work/jobs" backup app
"$bs" --jobs "$work/jobs" list app

say "disaster: DROP DATABASE app"
psql_ -d postgres -c "DROP DATABASE app"

say "backstop restore app"
"$bs" --jobs "$work/jobs" restore app

say "compare"
after=$(fingerprint)
echo "$after"
if [ "$before" = "$after" ]; then
  echo "OK: the restored database matches the original, table by table"
else
  echo "MISMATCH: the restored data differs" >&2
  exit 1
fi
say "audit log ($work/state/audit.log)"
cat "$work/state/audit.log"
