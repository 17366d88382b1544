"""Host configuration files rendered from the Jinja2 templates in installer/templates/.

StrictUndefined: a missing variable is an error, never an empty string in a config file.
Every value is validated where it is read (cluster.yaml, join.yaml, bundle.json); as a second
line of defence no rendered value may hold a line break or another control character (each
target - TOML, YAML, keepalived, haproxy, shell, yum - is line-based, so a newline in a value
is how a line of configuration gets injected), and the `toml` filter quotes TOML strings.
Templates are read with pkgutil so that they load from the .pyz as well as from a checkout.
Jinja2 is imported at the first render, not with this module: a run that renders nothing (or
not yet: `install` up to its unpack step) does not pay for it.
"""

import pkgutil
import re
from typing import Any, Optional

from installer.format.errors import UsageError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _load(name: str) -> Optional[str]:
    data = pkgutil.get_data("installer", "templates/" + name)
    return None if data is None else data.decode("utf-8")  # None: jinja2.TemplateNotFound


class UnsafeValue(UsageError):
    """A value that would break out of its line in a rendered file."""


def _finalize(value: Any) -> Any:
    if isinstance(value, str) and _CONTROL.search(value):
        raise UnsafeValue("refusing to render {!r}: a control character (newline, tab...) in a "
                          "configuration value".format(value),
                          hint="fix the value in cluster.yaml (or join.yaml) that holds it")
    return value


def toml_string(value: Any) -> str:
    """A TOML basic string (quotes included) holding exactly `value`."""
    text = str(value)
    if _CONTROL.search(text):
        raise UnsafeValue("refusing to render {!r} into TOML: a control character".format(text))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ENV: Any = None  # the jinja2.Environment, made at the first render


def _environment() -> Any:
    global _ENV
    if _ENV is None:
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FunctionLoader(_load),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            finalize=_finalize,
        )
        env.filters["toml"] = toml_string
        _ENV = env
    return _ENV


def render(name: str, **values: Any) -> str:
    """Render installer/templates/`name` with `values`."""
    return _environment().get_template(name).render(**values)
