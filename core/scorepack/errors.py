"""scorepack's one exception tree. Standard library only.

Every error a user can meet is one of these. They become user-facing in exactly two
places: the CLI turns them into an exit message, the server turns them into an HTTP
status through one table (``scorepack.server.errors``). Each class carries a stable
``code`` string that appears in JSON error bodies.

    ScorepackError
    ├── PluginError
    │   ├── DuplicateBackendError ........ two plugins claim one backend name
    │   └── UnknownBackendError .......... --backend NAME that nobody registered
    ├── ModelError
    │   ├── UnknownFormatError ........... no backend recognises the path
    │   ├── AmbiguousFormatError ......... several backends claim the path
    │   ├── BackendNotInstalledError ..... known format, its plugin is not installed
    │   ├── FrameworkMissingError ........ plugin installed, its framework is not
    │   ├── ModelLoadError ............... the framework could not load the model
    │   │   └── BackendOptionError ....... an -O option the backend does not take, or a bad value
    │   ├── DeviceUnavailableError ....... cuda asked for, none usable
    │   ├── IntegrityError ............... a model file does not match its recorded hash
    │   └── BackendContractError ......... a backend broke the batch contract
    ├── RequestError (the client's fault: 4xx)
    │   ├── BadRequestError .............. 400
    │   │   ├── EmptyBodyError
    │   │   ├── InvalidImageError
    │   │   ├── InvalidJSONError
    │   │   └── InvalidTensorError
    │   ├── UnauthorizedError ............ 401
    │   ├── NotFoundError ................ 404
    │   │   └── ModelNotFoundError ....... no such model or version in the repository
    │   ├── MethodNotAllowedError ........ 405
    │   ├── RequestTimeoutError .......... 408 (the client stopped sending its request)
    │   ├── PayloadTooLargeError ......... 413
    │   │   ├── BodyTooLargeError
    │   │   ├── ImageTooLargeError
    │   │   └── ImageTooComplexError ..... within the pixel limit, too costly to decode
    │   ├── UnsupportedMediaTypeError .... 415
    │   │   └── UnsupportedEncodingError ..... a compressed body (Content-Encoding)
    │   ├── HeadersTooLargeError ......... 431
    │   ├── ClientGoneError .............. 499: the client left before its answer
    │   └── ModelControlError ............ 400: load/unload refused (--model-control none)
    ├── ServiceUnavailableError (503)
    │   ├── QueueFullError ............... with retry_after seconds
    │   ├── UploadBufferFullError ........ too many bytes of arriving requests held
    │   ├── ThreadsBusyError ............. every scoring thread of azmlinfsrv's worker busy
    │   └── NotReadyError
    ├── ScoringTimeoutError (504)
    ├── PredictError (500) ............... the model itself failed on valid input
    ├── MissingExtraError ................ an optional part's packages are not installed
    ├── PackageError ..................... a scoring package is missing or malformed
    ├── DeployError ...................... a deploy target failed
    └── RemoteError ...................... a scoring service answered with an error
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "AmbiguousFormatError",
    "BackendContractError",
    "BackendNotInstalledError",
    "BackendOptionError",
    "BadRequestError",
    "BodyTooLargeError",
    "ClientGoneError",
    "DeployError",
    "DeviceUnavailableError",
    "DuplicateBackendError",
    "EmptyBodyError",
    "FrameworkMissingError",
    "HeadersTooLargeError",
    "ImageTooLargeError",
    "IntegrityError",
    "InvalidImageError",
    "InvalidJSONError",
    "InvalidTensorError",
    "MethodNotAllowedError",
    "MissingExtraError",
    "ModelControlError",
    "ModelError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotFoundError",
    "NotReadyError",
    "PackageError",
    "PayloadTooLargeError",
    "PluginError",
    "PredictError",
    "QueueFullError",
    "RemoteError",
    "RequestError",
    "RequestTimeoutError",
    "ScorepackError",
    "ScoringTimeoutError",
    "ServiceUnavailableError",
    "ThreadsBusyError",
    "UnauthorizedError",
    "UnknownBackendError",
    "UnknownFormatError",
    "UnsupportedEncodingError",
    "UnsupportedMediaTypeError",
    "UploadBufferFullError",
]


class ScorepackError(Exception):
    """Base of every error scorepack raises on purpose."""

    code = "scorepack_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- plugins ---------------------------------------------------------------------------


class PluginError(ScorepackError):
    """A plugin is broken or two plugins disagree."""

    code = "plugin_error"


class DuplicateBackendError(PluginError):
    """Two plugins registered a backend under the same name."""

    code = "duplicate_backend"

    def __init__(self, name: str, first: str, second: str) -> None:
        self.name, self.first, self.second = name, first, second
        super().__init__(
            f"Backend name {name!r} is registered by two plugins: {first} and {second}. "
            "Uninstall one of them."
        )


class UnknownBackendError(PluginError):
    """A backend was asked for by name and none has that name."""

    code = "unknown_backend"

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = sorted(available)
        names = ", ".join(self.available) or "none installed"
        super().__init__(f"No backend named {name!r}. Installed backends: {names}.")


# --- models ----------------------------------------------------------------------------


class ModelError(ScorepackError):
    """A model could not be recognised, loaded or run as a whole."""

    code = "model_error"


class UnknownFormatError(ModelError):
    """No installed backend recognises the path."""

    code = "unknown_format"

    def __init__(self, path: str, formats: dict[str, Sequence[str]]) -> None:
        self.path = path
        self.formats = formats
        lines = [f"  {name}: {', '.join(fmts)}" for name, fmts in sorted(formats.items())]
        listing = "\n".join(lines) if lines else "  (no backend is installed)"
        super().__init__(
            f"No installed backend recognises {path!r}. Formats accepted here:\n{listing}"
        )


class AmbiguousFormatError(ModelError):
    """More than one backend claims the path."""

    code = "ambiguous_format"

    def __init__(self, path: str, backends: Sequence[str]) -> None:
        self.path = path
        self.backends = list(backends)
        super().__init__(
            f"Several backends recognise {path!r}: {', '.join(backends)}. "
            "Choose one with --backend NAME."
        )


class BackendNotInstalledError(ModelError):
    """The path is in a known format whose backend plugin is not installed."""

    code = "backend_not_installed"

    def __init__(self, path: str, fmt: str, package: str) -> None:
        self.path, self.format, self.package = path, fmt, package
        super().__init__(
            f"{path!r} looks like a {fmt}, but its backend is not installed: pip install {package}"
        )


class FrameworkMissingError(ModelError):
    """A backend's framework is not importable."""

    code = "framework_missing"

    def __init__(self, backend: str, framework: str, install: str) -> None:
        self.backend, self.framework, self.install = backend, framework, install
        super().__init__(f"The {backend} backend needs {framework}: {install}")


class ModelLoadError(ModelError):
    """The framework refused to load the model."""

    code = "model_load_error"


class BackendOptionError(ModelLoadError):
    """A backend option (``-O name=value``) the backend does not declare, or whose value
    does not parse as its declared type. Raised before the model loads."""

    code = "backend_option_error"


class DeviceUnavailableError(ModelError):
    """The requested device does not exist or the framework cannot use it."""

    code = "device_unavailable"


class IntegrityError(ModelError):
    """A model file does not match the sha256 recorded for it."""

    code = "integrity_error"

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"{path} does not match the package manifest (sha256 {actual[:12]}…, "
            f"expected {expected[:12]}…). The package was modified or damaged; rebuild it."
        )


class BackendContractError(ModelError):
    """A backend returned something other than one result row per input row."""

    code = "backend_contract"


# --- requests (4xx) --------------------------------------------------------------------


class RequestError(ScorepackError):
    """The request is at fault; the client can fix it."""

    code = "bad_request"


class BadRequestError(RequestError):
    """Generic 400."""

    code = "bad_request"


class EmptyBodyError(BadRequestError):
    """POST /score without a body."""

    code = "empty_body"

    def __init__(self) -> None:
        super().__init__(
            "The request body is empty. Send image bytes (image/jpeg, image/png) "
            'or JSON tensors ({"inputs": {...}}).'
        )


class InvalidImageError(BadRequestError):
    """The bytes are not a decodable JPEG or PNG."""

    code = "invalid_image"


class InvalidJSONError(BadRequestError):
    """The body is not valid JSON or not in the expected layout."""

    code = "invalid_json"


class InvalidTensorError(BadRequestError):
    """A named tensor has the wrong name, shape or dtype."""

    code = "invalid_tensor"

    def __init__(self, message: str, input_name: str | None = None) -> None:
        self.input_name = input_name
        super().__init__(message)


class UnauthorizedError(RequestError):
    """Missing or wrong key."""

    code = "unauthorized"


class NotFoundError(RequestError):
    """No such route."""

    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """The repository has no model of that name, or not that version of it."""

    code = "model_not_found"

    def __init__(self, name: str, version: str | None = None, known: Iterable[str] = ()) -> None:
        self.name, self.version = name, version
        self.known = list(known)
        listing = ", ".join(self.known) or "none"
        if version is None:
            message = f"Unknown model {name!r}; the models served are: {listing}."
        elif not self.known:
            # a model served without version folders: the fix is to name no version
            message = f"Model {name!r} has no versions (asked for {version!r}): leave it out."
        else:
            message = f"Model {name!r} has no version {version!r}; its versions are: {listing}."
        super().__init__(message)


class ModelControlError(RequestError):
    """Loading or unloading a model through the API when the server does not allow it."""

    code = "model_control"


class MethodNotAllowedError(RequestError):
    """Route exists, method does not."""

    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: Sequence[str]) -> None:
        self.allowed = list(allowed)
        super().__init__(f"{method} is not allowed on {path}; use {', '.join(allowed)}.")


class RequestTimeoutError(RequestError):
    """The client began a request and stopped sending it."""

    code = "request_timeout"

    def __init__(self, seconds: float, setting: str = "SCOREPACK_READ_TIMEOUT_S") -> None:
        self.seconds = seconds
        super().__init__(
            f"The request did not arrive in time: nothing was received for {seconds:g} s "
            f"({setting})."
        )


class HeadersTooLargeError(RequestError):
    """The request's headers are over a size or count limit."""

    code = "headers_too_large"


class ClientGoneError(RequestError):
    """The client closed its connection while its request waited: its work was dropped.

    Nobody reads the answer; its status (nginx's 499, "client closed request") is for the
    access log and the metrics."""

    code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__(
            "The client closed the connection before its answer; its work was dropped."
        )


class PayloadTooLargeError(RequestError):
    """The body or the image it holds is over a configured limit."""

    code = "payload_too_large"


class BodyTooLargeError(PayloadTooLargeError):
    """The body is over --max-body-bytes."""

    code = "body_too_large"

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit, self.size = limit, size
        got = f"{size} bytes" if size is not None else "more than that"
        super().__init__(
            f"The request body is too large: {got}, the limit is {limit} bytes "
            "(SCOREPACK_MAX_BODY_BYTES)."
        )


class ImageTooLargeError(PayloadTooLargeError):
    """The image header declares more pixels than --max-image-pixels."""

    code = "image_too_large"

    def __init__(self, width: int, height: int, limit: int) -> None:
        self.width, self.height, self.limit = width, height, limit
        super().__init__(
            f"The image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limit} pixels (SCOREPACK_MAX_IMAGE_PIXELS). Resize it before sending."
        )


class ImageTooComplexError(PayloadTooLargeError):
    """An image within the pixel limit that would still cost too much to decode: a side
    over 65,535 pixels, a JPEG with too many scans (:mod:`scorepack.imagelimits`).

    Its code is ``image_too_large``, as for too many pixels: the same kind of refusal."""

    code = "image_too_large"


class UnsupportedMediaTypeError(RequestError):
    """A content type scorepack does not decode."""

    code = "unsupported_media_type"

    def __init__(self, content_type: str, accepted: str | None = None) -> None:
        self.content_type = content_type
        super().__init__(
            f"Unsupported content type {content_type!r}. "
            + (
                accepted
                or "Send image/jpeg, image/png, application/octet-stream (sniffed) or "
                "application/json."
            )
        )


class UnsupportedEncodingError(UnsupportedMediaTypeError):
    """A body sent compressed (``Content-Encoding`` other than identity)."""

    code = "unsupported_encoding"

    def __init__(self, encoding: str) -> None:
        self.content_type = ""
        self.encoding = encoding
        RequestError.__init__(
            self,
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed "
            "(a compressed body could expand past the body limit).",
        )


# --- service state (5xx) ---------------------------------------------------------------


class ServiceUnavailableError(ScorepackError):
    """The server cannot take the request now; retrying later may work."""

    code = "unavailable"
    retry_after: float | None = None


class QueueFullError(ServiceUnavailableError):
    """The batch queue is at its bound."""

    code = "queue_full"

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"The scoring queue is full ({limit} requests waiting). Retry after "
            f"{retry_after:g} s, or raise --max-queue-size."
        )


class ThreadsBusyError(ServiceUnavailableError):
    """Under azmlinfsrv: every gunicorn thread that may score holds a request already."""

    code = "threads_busy"

    def __init__(self, threads: int, retry_after: float = 1.0) -> None:
        self.threads = threads
        self.retry_after = retry_after
        super().__init__(
            f"Every scoring thread is busy ({threads} requests in flight). Retry after "
            f"{retry_after:g} s, or deploy with more threads."
        )


class UploadBufferFullError(ServiceUnavailableError):
    """The bytes held for requests still arriving are at their bound."""

    code = "upload_buffer_full"

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"Too many request bytes are arriving at once (over {limit} bytes held). Retry "
            f"after {retry_after:g} s, or raise SCOREPACK_UPLOAD_BUFFER_BYTES."
        )


class NotReadyError(ServiceUnavailableError):
    """The model is not loaded (yet, or any more)."""

    code = "not_ready"

    def __init__(self, message: str = "The model is not loaded yet.") -> None:
        self.retry_after = 1.0
        super().__init__(message)


class ScoringTimeoutError(ScorepackError):
    """The request waited longer than its timeout."""

    code = "timeout"

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(
            f"The request was not scored within {timeout_s * 1000:.0f} ms "
            "(SCOREPACK_TIMEOUT_MS). The server is overloaded or the model is slow."
        )


class PredictError(ScorepackError):
    """The model failed on input that passed validation."""

    code = "predict_error"


# --- packages and deployment -----------------------------------------------------------


class MissingExtraError(ScorepackError):
    """An optional part of scorepack (an extra, such as ``grpc``) is not installed."""

    code = "missing_extra"

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        self.feature, self.extra, self.missing = feature, extra, missing
        super().__init__(f"{feature} needs {missing}: pip install 'scorepack[{extra}]'")


class PackageError(ScorepackError):
    """A scoring package is missing, malformed or inconsistent."""

    code = "package_error"


class DeployError(ScorepackError):
    """A deploy target could not complete."""

    code = "deploy_error"


class RemoteError(ScorepackError):
    """A scoring service (scorepack's, azmlinfsrv, Azure) answered with an error status."""

    code = "remote_error"

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        self.status = status
        self.remote_code = code
        super().__init__(f"HTTP {status}" + (f" {code}" if code else "") + f": {message}")
