"""Pure: why the typed models reject a spec, as one line a user can act on: one clause per error,
each naming its field as the API server would (`spec.nodes: ...`), an unknown field with a "did
you mean" hint from the kind's own field names, never library boilerplate. Both kinds use it."""

from __future__ import annotations

import functools
from difflib import get_close_matches
from typing import get_args

from kubeforge_api.model import problems
from pydantic import BaseModel, ValidationError

MAX_ERRORS = 5


@functools.cache
def field_names(model: type[BaseModel]) -> frozenset[str]:
    """Every camelCase field name under `model`, nested models included."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, info in current.model_fields.items():
            names.add(info.alias or name)
            for arg in (info.annotation, *get_args(info.annotation)):
                todo.extend(inner for inner in (arg, *get_args(arg))
                            if isinstance(inner, type) and issubclass(inner, BaseModel))
    return frozenset(names)


def explain(path: str, message: str, model: type[BaseModel]) -> str:
    """`path: message`, with pydantic's wording for an unknown field replaced by a hint."""
    if message == "Extra inputs are not permitted":
        close = get_close_matches(path.rsplit(".", 1)[-1], field_names(model), n=1)
        message = "unknown field" + (f" (did you mean {close[0]}?)" if close else "")
    return f"{path}: {message.removeprefix('Value error, ')}"


def spec_errors(e: ValidationError, model: type[BaseModel], root: str = "spec") -> str:
    """The first few errors of `e`, one clause each."""
    return "; ".join(explain(path, message, model) for path, message in problems(e, root)[:MAX_ERRORS])
