#!/bin/sh
# A second database in the local PostgreSQL for the MLflow tracking server (runs once, at initdb).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE mlflow OWNER \"$POSTGRES_USER\" ENCODING 'UTF8'"
