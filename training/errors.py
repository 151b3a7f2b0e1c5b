"""Errors a user can fix by changing the configuration."""


class ConfigError(ValueError):
    """Bad input: the message names the config key and how to fix it. run.py prints it without a traceback."""


def find_config_error(exc: BaseException) -> "ConfigError | None":
    """The ConfigError behind ``exc`` (Hydra's instantiate wraps the exceptions it sees), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
