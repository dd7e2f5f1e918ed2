"""The ``edgefree`` command: a thin click group; one module per command.

Heavy libraries are imported inside each command, so ``edgefree --help`` is instant.
Every option can also be set by an environment variable named in its help
(``EDGEFREE_<COMMAND>_<OPTION>``); a bad value there is named by its variable, and an
``EDGEFREE_*`` variable that no option or setting reads gets a warning.
"""

import difflib
import os
import re
import signal
import sys
import threading

from pathlib import Path

import click
from click.core import ParameterSource

from edgefree.cli.bench import bench
from edgefree.cli.build import build
from edgefree.cli.cache import cache
from edgefree.cli.emulator import emulator
from edgefree.cli.export import export
from edgefree.cli.flash import flash
from edgefree.cli.listing import models, targets
from edgefree.cli.params import variable_name
from edgefree.errors import EdgefreeError, Interrupted, raise_interrupted


def rank_prefix() -> str:
    """``"rank R: "`` in a process launched by torchrun among several (its errors name it), else empty."""
    import os

    return f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""

CONTEXT = {"auto_envvar_prefix": "EDGEFREE", "show_default": True, "help_option_names": ["-h", "--help"]}


class UserError(click.ClickException):
    """An EdgefreeError shown as one line, ``Error: ...``, exit status 2."""

    exit_code = 2


# Variables read by edgefree itself, besides the options' EDGEFREE_<COMMAND>_<OPTION>.
SETTINGS = ("EDGEFREE_CACHE", "EDGEFREE_TARGETS", "EDGEFREE_ARM64_HOME", "EDGEFREE_FAULT")  # FAULT: tests only


def known_variables(command: click.Command, prefix: str = "EDGEFREE") -> set[str]:
    """Every EDGEFREE_* variable an option of ``command`` (and its subcommands) reads."""
    found = {p.envvar for p in command.params if isinstance(p.envvar, str)}
    found |= {f"{prefix}_{p.name.upper()}" for p in command.params if isinstance(p, click.Option) and p.name}
    for name, sub in getattr(command, "commands", {}).items():
        found |= known_variables(sub, f"{prefix}_{name.upper().replace('-', '_')}")
    return found


def _warn_unknown_variables(group: click.Group) -> None:
    known = known_variables(group) | set(SETTINGS)
    for name in sorted(v for v in os.environ if v.startswith("EDGEFREE_") and v not in known):
        close = difflib.get_close_matches(name, known, n=1)
        click.echo(f"Warning: environment variable {name} is not an edgefree setting and is ignored"
                   + (f" (did you mean {close[0]}?)" if close else ""), err=True)


def _bad_variable(exc: click.BadParameter) -> UserError | None:
    """A bad option value that came from its environment variable, named by that variable."""
    ctx, param = exc.ctx, exc.param
    if ctx is None or param is None or ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
        return None
    name = variable_name(ctx, param)
    return UserError(f"environment variable {name}={os.environ.get(name, '')!r} is not a valid "
                     f"{param.opts[0] if getattr(param, 'opts', None) else param.name}: {exc.message.rstrip('.')}. "
                     f"Fix it, or unset it (unset {name})")


# The hidden files edgefree writes beside a path before it moves them there: ``.NAME.tmp``,
# ``.NAME.build.log``, ``.NAME.edgefree-*`` (a staging folder), ``.NAME.lock``
_HIDDEN = re.compile(r"^\.(?P<name>.+?)\.(tmp|build\.log|lock|edgefree-[^/]*)$")


def _where(filename) -> str:
    """`` (path)`` for an OSError's file; for a hidden file edgefree writes beside a path the user gave,
    that path and its folder."""
    if not filename:
        return ""
    path = Path(os.fsdecode(filename))
    match = _HIDDEN.match(path.name)
    if not match:
        return f" ({path})"
    return f" writing {path.with_name(match['name'])} (edgefree writes a hidden file beside it in {path.parent} first)"


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on its write end)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or a stdout without a file descriptor
        return False


def _stop_on_sigterm() -> None:
    """SIGTERM ends a command as Ctrl-C does: through its cleanup (staging folders removed)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_interrupted)


def _one_line(exc: click.UsageError, group: click.Context | None = None) -> UserError:
    """click's own usage error (an unknown option, a bad value) as one line, as every other error is; its help
    is the subcommand's where the error names no context of its own (an option missing its value)."""
    if exc.ctx is not None and (group is None or exc.ctx.command is not group.command):
        where = exc.ctx.command_path
    elif group is not None and group.invoked_subcommand:
        where = f"{group.command_path} {group.invoked_subcommand}"
    else:
        where = "edgefree"
    return UserError(f"{exc.format_message()} (see `{where} --help`)")


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx):
        _warn_unknown_variables(self)
        _stop_on_sigterm()
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            raise (_bad_variable(exc) or _one_line(exc, ctx)) from exc
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc
        except EdgefreeError as exc:
            raise UserError(rank_prefix() + str(exc)) from exc
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (_stop_on_sigterm): the staging folders are already gone
            stopped = exc.signal if isinstance(exc, Interrupted) else signal.SIGINT
            click.echo(f"{rank_prefix()}interrupted ({stopped.name}): stopped; no half-written output is left "
                       "behind (docs/output-folder.md)", err=True)
            sys.exit(128 + stopped.value)
        except BrokenPipeError as exc:
            if not _stdout_closed():  # a pipe of another kind: an error like the others below
                raise UserError(rank_prefix() + f"{exc.strerror or exc}{_where(exc.filename)}") from exc
            # the reader of our output went away (`edgefree targets | head -1`): say nothing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(141)  # 128 + SIGPIPE, as a shell reports it
        except OSError as exc:  # a disk full, a file that vanished: one line, not a traceback
            raise UserError(rank_prefix() + f"{exc.strerror or exc}{_where(exc.filename)}: check the path, its "
                            "permissions and the free space") from exc


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="edgefree")
def cli():
    """edgefree: compress an image classifier for edge devices without its training data."""


for command in (bench, build, cache, emulator, export, flash, models, targets):
    cli.add_command(command)


def main(command=None) -> None:
    """The ``edgefree`` command (``command``: ``cli`` wrapped, as ``python -m edgefree`` wraps it for torchrun).
    Once it has ended (its outputs published, its result printed), Ctrl-C and SIGTERM are ignored while the
    interpreter shuts its libraries down (seconds, with the runtimes loaded): a signal then would report a
    failure for a command that has succeeded."""
    try:
        (command or cli)(prog_name="edgefree")
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
