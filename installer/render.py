"""Host configuration files rendered from the Jinja2 templates in installer/templates/.

StrictUndefined: a missing variable is an error, never an empty string in a config file.
Templates are read with pkgutil so that they load from the .pyz as well as from a checkout.
"""

import pkgutil
from typing import Any

import jinja2


def _load(name: str) -> str:
    data = pkgutil.get_data("installer", "templates/" + name)
    if data is None:
        raise jinja2.TemplateNotFound(name)
    return data.decode("utf-8")


_ENV = jinja2.Environment(
    loader=jinja2.FunctionLoader(_load),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


def render(name: str, **values: Any) -> str:
    """Render installer/templates/`name` with `values`."""
    return _ENV.get_template(name).render(**values)
