#!/bin/sh
# weed mini with one S3 identity from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (all actions).
set -eu
: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
config=/tmp/s3.json
cat > "$config" <<JSON
{"identities": [{"name": "catdog", "credentials": [{"accessKey": "$MINIO_ROOT_USER", "secretKey": "$MINIO_ROOT_PASSWORD"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
exec weed mini -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=9000 -s3.config="$config" \
  -admin.ui=false -webdav=false ${CATDOG_S3_BUCKETS:+-bucket="$CATDOG_S3_BUCKETS"}
