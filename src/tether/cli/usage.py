"""How the `tether` commands explain themselves: plain Click help (it wraps at any width, and
shows flags without ``<bool>`` placeholders), and an unknown option answered with the close
matches or, when nothing is close, the options the command has."""

from __future__ import annotations

import difflib
from typing import Any

from typer.core import TyperCommand

try:  # Typer ≥ 0.2x runs a Click of its own; older ones use Click itself
    from typer._click import exceptions as click_errors  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef,unused-ignore]



class HelpfulCommand(TyperCommand):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            result: list[str] = super().parse_args(ctx, args)
            return result
        except click_errors.NoSuchOption as exc:
            raise click_errors.UsageError(unknown_option_message(exc.option_name, self.option_names(ctx)),
                                          ctx) from None

    def option_names(self, ctx: Any) -> list[str]:
        names = {name for param in self.get_params(ctx)
                 if getattr(param, "param_type_name", "") == "option" and not getattr(param, "hidden", False)
                 for name in (*param.opts, *param.secondary_opts) if name.startswith("--")}
        return sorted(names - {"--help"})


def unknown_option_message(option: str, names: list[str]) -> str:
    close = difflib.get_close_matches(option, names, n=3, cutoff=0.75)
    if close:
        return f"No such option: {option}. Did you mean {' or '.join(close)}?"
    return f"No such option: {option}. The options are: {', '.join(names)} (and --help)."


def command(**kwargs: Any) -> dict[str, Any]:
    """Keyword arguments of ``app.command(...)`` for a command with these habits."""
    return {"cls": HelpfulCommand, **kwargs}
