"""Input errors raised by certlib. All are ValueErrors whose message names the bad value."""


class CertlibError(ValueError):
    """Base of certlib's input errors; a ValueError naming the bad value."""


class ImageError(CertlibError):
    """An image (bundled key, upload or array) that certlib cannot use."""


class ModelError(CertlibError):
    """A model (registry key, weights file, TorchScript upload) that certlib cannot use."""


class ModelUnavailableError(ModelError):
    """A registered model whose weights are not on this machine; the message says how to get them."""


class OutOfMemory(CertlibError):
    """The device ran out of memory even for a single noisy copy; the message says what to change."""


class StoreError(CertlibError):
    """The results store cannot be used as asked (damaged, read-only, full); the message names its path."""


# What pages show as a message instead of a traceback: certlib's own errors, and what a model or an attribution
# library raises on an input it cannot handle (torch's errors are RuntimeErrors; a model may raise anything).
SHOWN_ERRORS = (CertlibError, RuntimeError, ValueError, IndexError, TypeError, ArithmeticError, NotImplementedError)


def describe_error(exc: BaseException) -> str:
    """One readable sentence for a page: certlib's message as is, anything else as the model's failure."""
    if isinstance(exc, CertlibError):
        return str(exc)
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"the model or method failed: {type(exc).__name__}: {lines[-1][:400] if lines else 'no message'}"
