"""tokenwatt: how many joules each LLM token costs, per model, per server, per GPU."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokenwatt")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
