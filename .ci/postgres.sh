#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster (creating it if needed) and a throwaway
# database for the coordinator's tests; prints its URL, and only that, on
# stdout. Runs as root.
set -euo pipefail
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
# pg_ctlcluster and friends print notices on stdout ("Removed stale pid
# file."), which would become part of the URL: everything but the URL goes
# to stderr.
{
  if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main
  fi
  if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
    pg_ctlcluster "$version" main start
  fi
} >&2
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
su postgres -c "psql -q -p $port -c \"ALTER USER postgres PASSWORD '$password'\"" >&2
su postgres -c "psql -q -p $port -c 'DROP DATABASE IF EXISTS tillswarm_ci' -c 'CREATE DATABASE tillswarm_ci'" >&2
echo "postgres://postgres:$password@127.0.0.1:$port/tillswarm_ci"
