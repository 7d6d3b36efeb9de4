#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A throwaway PostgreSQL server for tests: data and Unix socket in DIR, no TCP, no fsync.
#   pg_server.sh start DIR [PORT]   initdb (as user postgres when run as root) and start;
#                                   prints the server's DSN (database postgres, user postgres)
#   pg_server.sh stop DIR           stop at once (-m immediate) and remove DIR
# DIR must be a fresh directory (mktemp -d) whose parents user postgres can traverse. Exits
# 3 when the server binaries are not installed (Debian: the postgresql package).
set -euo pipefail

command=${1:-}
dir=${2:-}
port=${3:-5432}
if [[ -z $command || -z $dir ]]; then
  echo "usage: $0 start|stop DIR [PORT]" >&2
  exit 2
fi

# pg_config (libpq-dev) names the server's bindir on Debian; /usr/local/bin may hold
# wrappers of initdb and pg_ctl that behave otherwise, so PATH is not asked.
bindir() {
  local candidate
  for candidate in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    if [[ -x $candidate/initdb && -x $candidate/pg_ctl ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# initdb refuses root: the cluster belongs to postgres then.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case $command in
  start)
    if ! bin=$(bindir); then
      echo "pg_server.sh: the PostgreSQL server binaries (initdb, pg_ctl) are not installed:" \
        "install the postgresql package (./tools/qf setup does)" >&2
      exit 3
    fi
    mkdir -p "$dir"
    chmod 755 "$dir"
    if [[ $(id -u) == 0 ]]; then chown postgres: "$dir"; fi
    if ! as_owner "$bin/initdb" --no-sync -A trust -U postgres -E UTF8 --locale=C -D "$dir/data" \
      >"$dir/initdb.log" 2>&1; then
      cat "$dir/initdb.log" >&2
      exit 1
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses='' -k $dir -p $port -c fsync=off -c full_page_writes=off" start \
      >"$dir/pg_ctl.log" 2>&1; then
      cat "$dir/pg_ctl.log" "$dir/server.log" >&2 || true
      exit 1
    fi
    echo "host=$dir port=$port user=postgres dbname=postgres"
    ;;
  stop)
    if [[ -d $dir/data ]] && bin=$(bindir); then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
