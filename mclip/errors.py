"""Errors a user can fix, shared by every module (re-exported by :mod:`mclip.config`)."""


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message names the key and the fix."""
