"""tokenwatt: how many joules each LLM token costs, per model, per server, per GPU."""

# The one place the version is written: pyproject.toml reads it from here (hatch's `[tool.hatch.version]`),
# `tokenwatt --version` prints it and `tokenwatt_build_info` exports it.
__version__ = "0.1.0"
