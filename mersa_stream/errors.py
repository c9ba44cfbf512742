"""User-facing errors: each carries a one-line message and a documented exit code.

Exit codes (README, "Exit codes"):
  0  success (also: no speech found)
  1  unexpected internal error (a bug: please report it)
  2  bad command line or config.toml
  3  an input file could not be read or decoded (other files still complete)
  4  a model or checkpoint could not be found or loaded
  5  audio device missing, busy or lost (listen)
  130 interrupted (SIGINT/SIGTERM in analyze): what was finished is written, the rest is not
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MODEL = 4
EXIT_DEVICE = 5
EXIT_INTERRUPTED = 130


class MersaError(Exception):
    """An error the user can act on; printed as one line, never as a traceback."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(MersaError):
    exit_code = EXIT_USAGE


class InputError(MersaError):
    exit_code = EXIT_INPUT


class ModelError(MersaError):
    exit_code = EXIT_MODEL


class DeviceError(MersaError):
    exit_code = EXIT_DEVICE
