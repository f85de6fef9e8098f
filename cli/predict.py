"""predict: POST image bytes to the REST API (`POST /predict`, `?top_k=N`), SigV4-signed when it uses IAM auth."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse, urlunparse

import requests

from cli import config
from cli.errors import CliError, UsageError
from ml import contract

EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
AUTH_MODES = ("auto", "iam", "none")


@dataclass
class Result:
    image: str
    status: int
    predictions: list[dict]
    model: str | None
    error: dict | None
    latency_ms: float

    def as_json(self) -> dict:
        body: dict[str, Any] = {"image": self.image, "status": self.status}
        if self.error:
            body["error"] = self.error
        else:
            body |= {"predictions": self.predictions, "model": self.model}
        return body


def predict_url(base: str, top_k: int | None) -> str:
    """The API's base URL (a stage URL, or the local server) -> .../predict?top_k=N."""
    parsed = urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"not an http(s) URL: {base!r}")
    path = parsed.path.rstrip("/")
    if not path.endswith(contract.PREDICT_PATH):
        path += contract.PREDICT_PATH
    query = urlencode({contract.TOP_K_PARAM: top_k}) if top_k is not None else ""
    return urlunparse(parsed._replace(path=path, query=query))


def read_image(path: Path) -> tuple[bytes, str]:
    """The file's bytes and the media type its content (not its name) says it is."""
    if not path.is_file():
        raise UsageError(f"no such image file: {path}")
    body = path.read_bytes()
    if not body:
        raise UsageError(f"{path} is empty")
    if len(body) > contract.API_MAX_IMAGE_BYTES:
        raise UsageError(f"{path} is {len(body):,} bytes; the API accepts images up to "
                         f"{contract.API_MAX_IMAGE_BYTES:,} bytes")
    fmt = contract.sniff_image_format(body)
    if fmt is None:
        raise UsageError(f"{path} is not an image ({', '.join(contract.IMAGE_FORMATS)})")
    return body, contract.MEDIA_TYPE_BY_FORMAT[fmt]


def signing_region(url: str, fallback: str | None) -> str | None:
    match = EXECUTE_API_HOST.match(urlparse(url).netloc.split(":")[0])
    return match["region"] if match else fallback


def wants_signature(url: str, auth: str) -> bool:
    """auto: sign requests to API Gateway hosts (IAM-auth APIs need it; others ignore it), never to local servers."""
    if auth == "iam":
        return True
    return auth == "auto" and EXECUTE_API_HOST.match(urlparse(url).netloc.split(":")[0]) is not None


def sign(url: str, body: bytes, headers: dict[str, str], region: str, credentials: Any) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())


def credentials_for(profile: str | None, required: bool) -> Any:
    import boto3

    credentials = boto3.Session(profile_name=profile).get_credentials()
    if credentials is None and required:
        raise CliError("--auth iam needs AWS credentials: configure them (aws configure, AWS_PROFILE or --profile)")
    return credentials.get_frozen_credentials() if credentials is not None else None


def post_image(session: requests.Session, url: str, image: Path, *, auth: str, region: str | None,
               credentials: Any, api_key: str | None, timeout: float) -> Result:
    body, media_type = read_image(image)
    headers = {"Content-Type": media_type, "Accept": contract.JSON_CONTENT_TYPE}
    if api_key:
        headers["x-api-key"] = api_key
    if wants_signature(url, auth) and credentials is not None:
        sign_region = signing_region(url, region)
        if not sign_region:
            raise UsageError("cannot tell the API's region from its URL: pass --region to sign the request")
        headers = sign(url, body, headers, sign_region, credentials)
    started = time.perf_counter()
    try:
        response = session.post(url, data=body, headers=headers, timeout=timeout)
    except requests.exceptions.Timeout:
        raise CliError(f"{url} did not answer within {timeout:g} s") from None
    except requests.exceptions.RequestException as exc:
        reason = type(exc).__name__ if isinstance(exc, requests.exceptions.ConnectionError) else str(exc)
        raise CliError(f"cannot reach {url} ({reason}): is the API up? (`make serve` runs one locally)") from None
    latency = (time.perf_counter() - started) * 1000
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code == 200 and isinstance(payload, dict) and isinstance(payload.get("predictions"), list):
        return Result(str(image), 200, payload["predictions"], payload.get("model"), None, latency)
    error = payload.get("error") if isinstance(payload, dict) and isinstance(payload.get("error"), dict) else None
    if error is None:
        message = (payload or {}).get("message") if isinstance(payload, dict) else None
        error = {"code": f"http_{response.status_code}", "message": message or response.text[:200].strip()
                 or response.reason}
    if response.status_code == 403 and not headers.get("Authorization"):
        error["message"] += " (if the API uses IAM auth, configure AWS credentials or pass --auth iam)"
    return Result(str(image), response.status_code, [], None, error, latency)


def _listening(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at the URL's host and port (no request is sent)."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except (OSError, ValueError):  # refused, unreachable, or no valid port in the URL
        return False


def local_api(recorded: str | None) -> str:
    """The API of a local run: the run's recorded URL (`make demo SERVE=1`) while it serves, else `make serve`'s.
    Neither listening is one line that says what is down, not a connection error and a wrong hint."""
    candidates = list(dict.fromkeys(u for u in (recorded, config.LOCAL_API_URL) if u))
    for url in candidates:
        if _listening(url):
            return url
    raise CliError(f"no local API is listening on {' or '.join(candidates)}: start one with `make demo SERVE=1` "
                   "or `make serve` (or pass --url)")
