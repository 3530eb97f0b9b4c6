"""The one error type a bad request raises anywhere in the server: an HTTP status, a message and an OpenAI-style code."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A client mistake (4xx) or a refusal (429), reported as OpenAI's ``{"error": {...}}`` JSON body."""

    def __init__(self, status: int, message: str, *, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def to_json(self) -> dict[str, Any]:
        kind = "rate_limit_error" if self.status == 429 else "invalid_request_error"
        if self.status >= 500:
            kind = "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


__all__ = ["RequestError"]
