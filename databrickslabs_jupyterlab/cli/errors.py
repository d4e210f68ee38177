"""Exit statuses and the one-sentence errors of the CLI.

Every failure of the service modules (workspace, SSH, driver, lifecycle) is turned into a
:class:`CliError` here and nowhere else, so one kind of failure always ends with the same exit
status, whichever flag ran into it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_SSH = 4
EXIT_WORKSPACE = 5
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class CliError(Exception):
    """One sentence for the person at the terminal, and the exit status that goes with it."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def sentence(text: str) -> str:
    """``text`` on one line, ending with a full stop."""
    text = " ".join(str(text).split())
    return text if text.endswith((".", "!", "?")) else text + "."


def translate(err: BaseException) -> BaseException:
    """The :class:`CliError` for a failure of a service module; anything else unchanged."""
    from ..operations import OperationFailed, TransportRefused
    from ..ssh import SshError
    from ..sshconfig import SshConfigError
    from ..workspace import NoSuchCluster, NoSuchProfile, WorkspaceError, WorkspaceUnavailable

    if isinstance(err, CliError):
        return err
    if isinstance(err, NoSuchProfile | NoSuchCluster):
        return CliError(sentence(err.message), EXIT_NOT_FOUND)
    if isinstance(err, WorkspaceUnavailable):
        return CliError(sentence(err.message), EXIT_WORKSPACE)
    if isinstance(err, WorkspaceError):
        code = EXIT_WORKSPACE if (err.code or "").startswith("workspace_") else EXIT_FAILURE
        return CliError(sentence(err.message), code)
    if isinstance(err, TransportRefused):  # an impossible combination, before any change
        return CliError(sentence(str(err)), EXIT_USAGE)
    if isinstance(err, SshError):  # the driver's errors (DriverError) too
        return CliError(sentence(str(err)), EXIT_SSH)
    if isinstance(err, OperationFailed | SshConfigError):
        return CliError(sentence(str(err)), EXIT_FAILURE)
    return err


async def ws_call(awaitable: Awaitable[T]) -> T:
    """Await a service call, its failure turned into a :class:`CliError`."""
    try:
        return await awaitable
    except Exception as err:
        raise translate(err) from None


def cli_error(err: Exception, fallback: str) -> Any:
    """``translate(err)``, or a :class:`CliError` saying ``fallback: err`` for anything else."""
    translated = translate(err)
    if translated is err:
        return CliError(sentence(f"{fallback}: {err}"))
    return translated
