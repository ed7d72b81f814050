"""Name → object registries (timm-style decorators) for models, criteria, strategies and evaluators.

    MODELS = Registry[Callable[..., nn.Module]]("model", sort=True)

    @MODELS.register("resnet20")
    def resnet20(...): ...

    MODELS.register("mine", my_factory)   # plain call, same effect
    MODELS.get("resnet20")                # or MODELS["resnet20"]; unknown name: a one-line error

Entries are added when the defining module is imported. A registry whose entries are defined in
other modules names them (`modules=`) and imports them on its first lookup, so it is complete
whichever module was imported first; an unsorted registry lists its entries in the order of those
modules (then anything registered from elsewhere, in registration order), not in import order.

What an entry accepts (a model's arguments, a strategy's or an evaluator's options) is declared
once, in its factory's signature, each parameter typed and bounded with
`Annotated[int, Field(ge=1, le=...)]`; `signature_schema` turns that signature into a pydantic
model, which checks input at the door (`check_values`) and publishes it as JSON Schema.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import typing
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError, create_model
from pydantic_core import PydanticCustomError, core_schema

from .errors import PruningError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of one kind by unique name.

    `kind` names the kind in messages ("unknown model 'x'; choose one of: ..."); `error` is the
    exception type raised for an unknown or duplicate name; `sort` lists names sorted instead of
    in the order of `modules`. `modules` names the modules that register entries (a package
    counts for its submodules): the first lookup imports them all, and an entry ranks by the
    module its object was defined in, so neither completeness nor order depends on which module
    some caller happened to import first."""

    def __init__(
        self, kind: str, *, error: type[Exception] = PruningError, sort: bool = False, modules: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        self.error = error
        self.sort = sort
        self.modules = tuple(modules)
        self._entries: dict[str, T] = {}
        self._complete = not self.modules
        self._loading = False
        self._lock = threading.RLock()

    def _load(self) -> None:
        """Import `modules` once, before the first lookup. A lookup made while they import (by
        one of them, in this thread) sees the entries so far; other threads wait."""
        if self._complete:
            return
        with self._lock:
            if self._complete or self._loading:
                return
            self._loading = True
            try:
                for module in self.modules:
                    importlib.import_module(module)
                self._complete = True
            finally:
                self._loading = False

    def _rank(self, name: str) -> int:
        """The position in `modules` of the module that defined the entry (after them all when none)."""
        where = getattr(self._entries[name], "__module__", None) or ""
        return next(
            (i for i, m in enumerate(self.modules) if where == m or where.startswith(m + ".")), len(self.modules)
        )

    @overload
    def register(self, name: str | None = None) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str | None, obj: T) -> T: ...

    def register(self, name: str | None = None, obj: T | None = None):
        """Register under `name`: `@reg.register("x")` as a decorator, or `reg.register("x", obj)`.

        Without a name, the object's `name` attribute (strategies, criteria, evaluators) or its
        `__name__` is used. A name already taken is an error, as is a name that disagrees with
        the object's own non-empty `name` attribute."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{self.kind} registry: register() takes a name; use @register() or @register('name')")

        def add(obj: T) -> T:
            own = getattr(obj, "name", None)
            key = (
                name if name is not None else (own if isinstance(own, str) and own else getattr(obj, "__name__", None))
            )
            if not key:
                raise self.error(f"cannot register {obj!r} as a {self.kind}: no name given")
            if isinstance(own, str) and own and own != key:
                raise self.error(f"cannot register {self.kind} {key!r}: the object is named {own!r}")
            if key in self._entries:
                raise self.error(f"{self.kind} {key!r} is already registered ({self._entries[key]!r})")
            self._entries[key] = obj
            return obj

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The entry registered under `name`; an unknown name is an error listing the choices."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    __getitem__ = get

    def names(self) -> list[str]:
        """Registered names: sorted, or in the order of `modules` (registration order within one)."""
        self._load()
        return sorted(self._entries) if self.sort else sorted(self._entries, key=self._rank)

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


class OneOf:
    """`Annotated[str, OneOf(choices)]`: a name that must be one of `choices`, a collection (an
    enum in the JSON schema) or a callable giving them when checked (a registry filled later)."""

    def __init__(self, choices: Collection[str] | Callable[[], Collection[str]]) -> None:
        self.choices = choices

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        if not callable(self.choices):
            return core_schema.literal_schema(list(self.choices))
        names = self.choices

        def check(value: str) -> str:
            if value not in names():
                raise PydanticCustomError(
                    "one_of",
                    "unknown name '{value}'; choose one of: {names}",
                    {"value": value, "names": ", ".join(names())},
                )
            return value

        return core_schema.no_info_after_validator_function(check, core_schema.str_schema())


def signature_schema(fn: Callable[..., Any], title: str, skip: Collection[str] = ()) -> type[BaseModel]:
    """A pydantic model of `fn`'s named parameters (but `self`, *args, **kwargs and `skip`):
    each parameter's annotation, bounds included, and its default; unknown keys are refused,
    and so are non-finite floats (a job spec stores options as JSON, which has none).
    The signature stays the one declaration, so the schema cannot drift from what `fn` takes."""
    fields: dict[str, Any] = {}
    code = getattr(fn, "__init__", fn) if isinstance(fn, type) else fn  # where the annotations were written
    namespace = {**vars(typing), **getattr(code, "__globals__", {})}
    for p in inspect.signature(fn).parameters.values():
        if p.name == "self" or p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation
        if ann is p.empty:
            ann = Any
        elif isinstance(ann, str):  # postponed (`from __future__ import annotations`)
            ann = eval(ann, namespace)
        fields[p.name] = (ann, ... if p.default is p.empty else p.default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False, title=title)
    return create_model(title.replace(" ", "_").replace("'", ""), __config__=config, **fields)


def check_values(
    schema: type[BaseModel], values: Mapping[str, Any], what: str, noun: str, error: type[Exception] = PruningError
) -> BaseModel:
    """`values` validated by `schema`; on failure `error` with one line naming each bad key, e.g.
    "strategy 'eagleeye' option n_samples: Input should be greater than or equal to 1" or
    "model 'convnet' takes no argument(s) depth; it takes: in_channels, num_classes, width"."""
    try:
        return schema.model_validate(dict(values))
    except ValidationError as exc:
        unknown = sorted(str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"])
        parts = []
        if unknown:
            known = ", ".join(sorted(schema.model_fields)) or "none"
            parts.append(f"{what} takes no {noun}(s) {', '.join(unknown)}; it takes: {known}")
        for e in exc.errors():
            if e["type"] != "extra_forbidden":
                loc = e["loc"]  # the key, then list indices (a union's member tags are left out)
                key = ".".join([str(loc[0]), *(str(x) for x in loc[1:] if isinstance(x, int))]) if loc else "value"
                parts.append(f"{what} {noun} {key}: {e['msg']}")
        raise error("; ".join(parts)) from None


def given(parsed: BaseModel, json: bool = False) -> dict[str, Any]:
    """The values a caller set on a `check_values` result (defaults stay the factory's own)."""
    return parsed.model_dump(mode="json" if json else "python", include=set(parsed.model_fields_set))
