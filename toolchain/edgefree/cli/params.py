"""Option types that refuse an empty value (``--out ""``) instead of reading it as the current folder or the
default: an empty value is a mistake, and the option left out is how a default is asked for."""

import click


def variable_name(ctx: click.Context, param: click.Parameter) -> str:
    """The environment variable that sets ``param`` (``EDGEFREE_<COMMAND>_<OPTION>`` unless it names its own)."""
    return param.envvar if isinstance(param.envvar, str) else f"{ctx.auto_envvar_prefix}_{param.name.upper()}"


def _refuse_empty(kind: click.ParamType, value, param, ctx) -> None:
    if isinstance(value, str) and not value.strip():
        left_out = ", or leave the option out" if isinstance(param, click.Option) else ""
        kind.fail(f"is empty: give it a value{left_out}", param, ctx)


class NonEmptyPath(click.Path):
    def convert(self, value, param, ctx):
        _refuse_empty(self, value, param, ctx)
        return super().convert(value, param, ctx)


class NonEmptyText(click.types.StringParamType):
    def convert(self, value, param, ctx):
        _refuse_empty(self, value, param, ctx)
        return super().convert(value, param, ctx)


NON_EMPTY_TEXT = NonEmptyText()
