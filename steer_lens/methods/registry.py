"""The registry of named methods: ``available()``, ``get(name)``, ``register``."""

from __future__ import annotations

from .base import Method

_REGISTRY: dict[str, Method] = {}


def register(method: Method | type[Method] | None = None, *, control: bool = True, replace: bool = False):
    """Register a method (an instance, or a class with a no-argument constructor); usable as a
    decorator. Unless ``control=False`` or the method sets ``control = None``, its matched random
    control is registered with it, under ``method.control`` or ``random_<name>``."""

    def add(m):
        inst = m() if isinstance(m, type) else m
        if not isinstance(inst, Method):
            raise TypeError(f"register() takes a steer_lens.methods.Method (subclass or instance), got {m!r}")
        if not inst.name:
            raise ValueError(f"{type(inst).__name__} has no name: set the class attribute name = '...'")
        if inst.name in _REGISTRY and not replace:
            raise ValueError(f"a method named {inst.name!r} is already registered; choose another name or "
                             "pass replace=True")
        if control and inst.control is not None:
            from .controls import control_for

            ctrl = control_for(inst)
            if ctrl.name in _REGISTRY and not replace:
                raise ValueError(f"the control name {ctrl.name!r} of {inst.name!r} is taken; set control = '...'")
            inst.control = ctrl.name
            _REGISTRY[inst.name] = inst
            _REGISTRY[ctrl.name] = ctrl
        else:
            inst.control = None
            _REGISTRY[inst.name] = inst
        return m

    return add(method) if method is not None else add


def unregister(name: str) -> None:
    """Remove a method and its control (tests, notebooks that redefine a method)."""
    m = _REGISTRY.pop(name, None)
    ctrl = getattr(m, "control", None)
    if ctrl and getattr(_REGISTRY.get(ctrl), "matched", None) == name:
        _REGISTRY.pop(ctrl)


def get(name: str) -> Method:
    """The registered method ``name``; an unknown name lists the available ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    """Every registered method name, in registration order (each method before its control)."""
    return list(_REGISTRY)


def control_of(name: str) -> str | None:
    """The name of ``name``'s matched random control, if it has one registered."""
    ctrl = getattr(_REGISTRY.get(name), "control", None)
    return ctrl if ctrl in _REGISTRY else None


def with_controls(names) -> list[str]:
    """``names`` with each one's random control right after it."""
    return [x for m in names for x in (m, control_of(m)) if x]


__all__ = ["available", "control_of", "get", "register", "unregister", "with_controls"]
