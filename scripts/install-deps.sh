#!/usr/bin/env bash
# Installs what backstop's tests and demo need on a fresh Debian machine:
# PostgreSQL server + client, the age and zstd CLIs, systemd-analyze, headless Chromium, and
# moto[server] (an S3 server)
# in a virtualenv of the project's own (.venv-s3). Starts nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

need_apt=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pg_ctl" ]; then
  need_apt+=(postgresql postgresql-client)
fi
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
command -v age >/dev/null || need_apt+=(age)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v minisign >/dev/null || need_apt+=(minisign)   # checks signatures by hand in tests
command -v runuser >/dev/null || need_apt+=(util-linux)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)   # the systemd unit tests
[ -x /usr/bin/chromium ] || need_apt+=(chromium)   # the status page test loads it in a real browser
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

venv="$here/.venv-s3"
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" - <<'PY'
import importlib.metadata as m, sys
v = tuple(int(x) for x in m.version("moto").split(".")[:3])
sys.exit(0 if v >= (5, 2, 5) else 1)
PY
then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q 'moto[server]>=5.2.5'
fi
echo "ready: postgres in $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1), moto_server in $venv/bin, $(age --version 2>/dev/null | head -n1) age, $(zstd --version | head -n1)"
