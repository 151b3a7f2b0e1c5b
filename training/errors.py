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


def options_from_config(cls, values, method: str, hint: str = ""):
    """Dataclass ``cls`` built from a config node (e.g. the ``loss`` group); a key it does not know is a
    ConfigError naming ``loss.<key>``, the method and the keys it takes."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values or {}) - known)
    if unknown:
        raise ConfigError(f"loss.{unknown[0]} is not an option of method={method}; the loss group takes "
                          f"{', '.join(sorted(known))}{hint}")
    return cls(**dict(values or {}))
