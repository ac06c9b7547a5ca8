"""The serving errors that carry their HTTP status (catdog.errors.CatdogError): not ready (503), upload too large (413).

catdog.web.errors answers every CatdogError with its own status, so a route or the service
raises these and nothing translates them. Overloaded (503) lives in catdog.web.batching and
DiskFull (507) in catdog.web.disk, beside the code that raises them.
"""

from __future__ import annotations

from catdog.errors import CatdogError

NOT_READY_RETRY_AFTER_S = 5  # what a 503 "not ready" tells the client to wait (Retry-After, seconds)


class NotReady(CatdogError):
    """The model is still loading or warming up, or failed to (503 with Retry-After: 5).

    The text says why ("the model is warming"); the answer's detail is "not ready: " + the text.
    """

    status_code = 503

    def http_detail(self) -> str:
        return f"not ready: {self}"

    def http_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(NOT_READY_RETRY_AFTER_S)}


class UploadTooLarge(CatdogError):
    """A request body, one uploaded file, or the number of files is over its limit (413).

    The text names the limit ("the file is over the limit of 10 MiB (CATDOG_MAX_UPLOAD_BYTES)").
    """

    status_code = 413
