"""SageMaker's error names, raised the way boto3 raises them, so callers handle the stand-in and AWS alike."""

from __future__ import annotations

import uuid
from typing import Any

from botocore.exceptions import ClientError

VALIDATION = "ValidationException"
NOT_FOUND = "ResourceNotFound"
IN_USE = "ResourceInUse"
LIMIT_EXCEEDED = "ResourceLimitExceeded"
CONFLICT = "ConflictException"


class SageMakerError(ClientError):
    """A refused SageMaker request: `code` and `message` as AWS returns them (`response["Error"]` too)."""

    def __init__(self, code: str, message: str, operation: str = "", status: int = 400) -> None:
        response: Any = {  # botocore's _ClientErrorResponseTypeDef, as AWS returns it
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": str(uuid.uuid4())},
        }
        super().__init__(response, operation or "SageMaker")
        self.code, self.message, self.status = code, message, status
        self.operation = operation

    def with_operation(self, operation: str) -> SageMakerError:
        self.operation = operation
        ClientError.__init__(self, self.response, operation)  # rebuild str(): it names the operation
        return self

    def __reduce__(self):  # ClientError pickles by its (response, operation) arguments, not ours
        return (type(self), (self.code, self.message, self.operation, self.status))


def validation(message: str) -> SageMakerError:
    return SageMakerError(VALIDATION, message)


def not_found(message: str = "Requested resource not found.") -> SageMakerError:
    return SageMakerError(NOT_FOUND, message)


def in_use(message: str) -> SageMakerError:
    return SageMakerError(IN_USE, message)


class JobFailure(Exception):
    """Ends a training job as Failed with this FailureReason (one line: a reason SageMaker would give)."""
