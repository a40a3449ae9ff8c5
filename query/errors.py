"""Errors the query layer raises for the API to answer as 4xx JSON ({"error": message}), never a 500."""

from __future__ import annotations


class QueryError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(QueryError):
    status = 400


class NotFound(QueryError):
    status = 404
