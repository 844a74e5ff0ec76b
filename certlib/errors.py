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
