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
# TLS: a private CA and a server certificate for 127.0.0.1, made once; the
# tests of TLS to PostgreSQL trust the CA ($ca, TILLSWARM_TEST_POSTGRES_CA).
certs=/etc/postgresql/$version/main/tillswarm-ci
ca=/etc/postgresql/tillswarm-ci-ca.pem
{
  if [[ ! -s $certs/server.pem ]]; then
    mkdir -p "$certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=tillswarm CI test CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=127.0.0.1" -keyout "$certs/server.key" -out "$certs/server.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
      > "$certs/server.ext"
    openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
      -CAcreateserial -days 3650 -extfile "$certs/server.ext" -out "$certs/server.pem"
    chown -R postgres:postgres "$certs"
    chmod 600 "$certs/ca.key" "$certs/server.key"
  fi
  install -m 644 "$certs/ca.pem" "$ca"
  su postgres -c "psql -q -p $port -c \"ALTER SYSTEM SET ssl = on\" \
    -c \"ALTER SYSTEM SET ssl_cert_file = '$certs/server.pem'\" \
    -c \"ALTER SYSTEM SET ssl_key_file = '$certs/server.key'\" -c 'SELECT pg_reload_conf()'"
} >&2
password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
su postgres -c "psql -q -p $port -c \"ALTER USER postgres PASSWORD '$password'\"" >&2
su postgres -c "psql -q -p $port -c 'DROP DATABASE IF EXISTS tillswarm_ci' -c 'CREATE DATABASE tillswarm_ci'" >&2
echo "postgres://postgres:$password@127.0.0.1:$port/tillswarm_ci"
