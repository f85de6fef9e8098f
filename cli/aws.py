"""The CLI's side of AWS's APIs: console addresses, and S3 locations as one-line errors. Models, pagination, JSON
and S3 URIs themselves: awsshapes."""

from __future__ import annotations

from awsshapes import S3UriError, parse_s3_uri
from cli.errors import CliError


def s3_location(uri: str) -> tuple[str, str]:
    """(bucket, key) of an S3 URI (awsshapes.parse_s3_uri); anything else is a CliError naming it."""
    try:
        return parse_s3_uri(uri)
    except S3UriError as exc:
        raise CliError(str(exc)) from None


def console_s3_url(bucket: str, key: str, region: str) -> str:
    return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?region={region}&prefix={key}"


def console_execution_url(arn: str, region: str) -> str:
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}"
