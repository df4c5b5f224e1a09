"""The failures a chat rule can raise. Each door translates them: the socket into an ``error``
frame with the code below (PROTOCOL section 4), the REST API into an HTTP status."""


class ChatError(Exception):
    code = "server_error"
    http_status = 500

    def __init__(self, message: str = "", *, retry_after_ms: int | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code.replace("_", " ")
        self.retry_after_ms = retry_after_ms


class Invalid(ChatError):
    code = "invalid"
    http_status = 400


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403


class NotFound(ChatError):
    code = "not_found"
    http_status = 404


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429


class TooLarge(ChatError):
    code = "too_large"
    http_status = 413


class IdentityMismatch(ChatError):
    code = "identity_mismatch"
    http_status = 403


class UploadFailed(ChatError):
    code = "upload_failed"
    http_status = 400
