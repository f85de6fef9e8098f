"""One clear line for everything a user can get wrong or AWS can refuse; main() prints it and exits non-zero."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

EXIT_ERROR = 1  # AWS refused, or something is missing
EXIT_USAGE = 2  # bad input (argparse uses 2 as well)

ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
                           "Forbidden", "403"})
BAD_CREDENTIALS = frozenset({"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken",
                             "ExpiredTokenException", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                             "RequestExpired", "InvalidSignatureException"})
THROTTLED = frozenset({"Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
                       "RequestLimitExceeded", "SlowDown", "RequestThrottled", "RequestThrottledException"})
NOT_FOUND = frozenset({"ResourceNotFound", "ResourceNotFoundException", "ExecutionDoesNotExist",
                       "StateMachineDoesNotExist", "NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class CliError(Exception):
    """A failure explained in one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def error_code(exc: BaseException) -> str:
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "") if isinstance(
        exc, ClientError) else ""


def is_not_found(exc: BaseException) -> bool:
    """AWS says 'not there' in many dialects; SageMaker's Describe* say it as a ValidationException."""
    code = error_code(exc)
    if code in NOT_FOUND:
        return True
    message = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Message", "")).lower()
    return code in ("ValidationException", "ValidationError") and (
        "not found" in message or "could not find" in message or "does not exist" in message)


def describe_aws_error(exc: BaseException) -> str:
    """The one line a user sees for a botocore failure (never a traceback)."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found: configure them (aws configure, AWS_PROFILE or --profile), "
                "or read a local run with --local")
    if isinstance(exc, NoRegionError):
        return "no AWS region configured: pass --region or set AWS_REGION"
    if isinstance(exc, ProfileNotFound):
        return f"AWS profile not found: {exc}"
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "") or str(exc)
        operation = getattr(exc, "operation_name", "") or "request"
        if code in ACCESS_DENIED:
            return f"access denied to {operation}: {message} (check the IAM permissions of your credentials)"
        if code in BAD_CREDENTIALS:
            return f"AWS rejected the credentials ({code}): {message}"
        if code in THROTTLED:
            return f"AWS throttled {operation} even after retries ({code}); wait a moment and try again"
        if code == "ExecutionDoesNotExist":
            return f"execution not found: {message}"
        if code == "StateMachineDoesNotExist":
            return f"state machine not found: {message} (is the stack deployed in this region?)"
        return f"{operation} failed ({code}): {message}"
    if isinstance(exc, BotoCoreError):
        return f"AWS client error: {exc}"
    return str(exc)
