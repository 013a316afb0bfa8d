"""The operator API's error type: HTTP status, machine-readable code, message, extra fields."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def denied(reason: str, message: str) -> ApiError:
    """403 with a machine-readable `reason` (role_required, not_owner, client_not_granted, ...)."""
    return ApiError(403, "forbidden", message, reason=reason)
