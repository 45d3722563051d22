#!/bin/sh
# First start of the compose Postgres (docker-compose.yml mounts this into
# /docker-entrypoint-initdb.d): the roles of README "Database roles".
#   timelines_owner     LOGIN, owns database `timelines`, applies the migrations (`migrate`)
#   timelines_enqueuer  NOLOGIN group for applications (grant it to their logins)
#   timelines_service   NOLOGIN group for the service
#   timelines_sync      LOGIN, member of timelines_service: the service connects as it
# The group roles are made here, by the superuser, so the owner needs no CREATEROLE: migration
# 0010 finds them and grants them their rights. psql reads the passwords from the environment
# (\getenv), so they never appear on a command line.
set -eu
: "${TIMELINES_OWNER_PASSWORD:?}" "${TIMELINES_SERVICE_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
\getenv owner_password TIMELINES_OWNER_PASSWORD
\getenv service_password TIMELINES_SERVICE_PASSWORD
CREATE ROLE timelines_owner LOGIN PASSWORD :'owner_password';
CREATE DATABASE timelines OWNER timelines_owner;
REVOKE CONNECT, TEMPORARY ON DATABASE timelines FROM PUBLIC;
CREATE ROLE timelines_enqueuer NOLOGIN;
CREATE ROLE timelines_service NOLOGIN;
GRANT CONNECT ON DATABASE timelines TO timelines_enqueuer, timelines_service;
CREATE ROLE timelines_sync LOGIN PASSWORD :'service_password' IN ROLE timelines_service;
SQL
