"""Start the MLflow tracking server for compose.yaml: make its S3 bucket if missing, then exec `mlflow server`.

Environment: MLFLOW_BACKEND_STORE_URI (postgresql+psycopg://...), MLFLOW_ARTIFACTS_DESTINATION
(s3://bucket/prefix), MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
MLFLOW_ALLOWED_HOSTS, MLFLOW_WORKERS. The S3 store may still be starting: retried for 60 s.
"""

import os
import sys
import time
from urllib.parse import urlparse

import boto3
from botocore.exceptions import BotoCoreError, ClientError

DEFAULT_ALLOWED_HOSTS = "mlflow,mlflow:5000,localhost,localhost:5000,127.0.0.1:5000"


def ensure_bucket(destination: str, deadline_s: float = 60.0) -> None:
    bucket = urlparse(destination).netloc
    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    started = time.monotonic()
    while True:
        try:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if bucket not in names:
                s3.create_bucket(Bucket=bucket)
                print(f"mlflow-server: created bucket {bucket}", file=sys.stderr, flush=True)
            return
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() - started > deadline_s:
                raise SystemExit(f"mlflow-server: the S3 store does not answer: {exc}") from None
            time.sleep(1)


def main() -> None:
    destination = os.environ["MLFLOW_ARTIFACTS_DESTINATION"]
    if destination.startswith("s3://"):
        ensure_bucket(destination)
    command = [
        "mlflow",
        "server",
        "--host",
        "0.0.0.0",
        "--port",
        os.environ.get("MLFLOW_PORT", "5000"),
        "--backend-store-uri",
        os.environ["MLFLOW_BACKEND_STORE_URI"],
        "--artifacts-destination",
        destination,
        "--serve-artifacts",
        "--workers",
        os.environ.get("MLFLOW_WORKERS", "2"),
        "--allowed-hosts",
        os.environ.get("MLFLOW_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS),
    ]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
