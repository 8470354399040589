"""Entry point of the built-in serial driver (``shipei.targets``: ``serial``).

A serial target reaches its device by ``url=`` (a port or a pyserial URL on this
machine) or by ``place=NAME``: a labgrid place (docs/lab.md), acquired through the
coordinator (``coordinator=HOST:PORT`` or ``LG_COORDINATOR``), its exported serial
port reached as RFC 2217, its board power-cycled before the run when the place has a
power resource (``power_cycle=false``: not), released when the run ends. ``wait=S``
waits up to S seconds for a place someone else holds (default: refuse at once);
``resource=NAME`` picks one of several serial ports. The place's identity goes into
the target's description (run.json ``targets.<label>.place``, and a certificate's
target identity).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from harness.driver.registry import TargetSpec
from harness.driver.target import Availability, Target

#: the options a place takes; the rest go to the serial target
PLACE_OPTIONS = ("place", "coordinator", "wait", "resource", "power_cycle")


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(
        name="serial-board", factory="targets.serial.provider:serial_board",
        summary="a chip on a board over a serial line (Shipei serial protocol v1)")
    for sensor, what in (("imu", "a 6-axis IMU"), ("ultrasonic", "an ultrasonic ranger")):
        yield TargetSpec(
            name=f"serial-{sensor}", factory="targets.serial.provider:serial_sensor",
            kwargs={"sensor": sensor},
            summary=f"{what} streaming over a serial line (Shipei serial protocol v1)")


class _Factory:
    """A serial target's factory: the target class (imported on first use), on a place
    when ``place=`` is given. Its signature is the class's plus the place's options, so
    an unknown option is answered with the list of valid ones."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def target_class(self) -> type[Target]:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, **options: Any) -> Target:
        return _build(self.target_class(), options)

    @property
    def __signature__(self) -> inspect.Signature:
        own = list(inspect.signature(self.target_class()).parameters.values())
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                 for name, default in (("place", None), ("coordinator", None), ("wait", 0.0),
                                       ("resource", None), ("power_cycle", True))]
        return inspect.Signature([*own, *extra])


#: ``serial-board``: :class:`~targets.serial.board.SerialBoardTarget`
serial_board = _Factory("targets.serial.board", "SerialBoardTarget")
#: ``serial-imu`` and ``serial-ultrasonic``: :class:`~targets.serial.sensors.SerialSensorTarget`
serial_sensor = _Factory("targets.serial.sensors", "SerialSensorTarget")


def _build(cls: type[Target], options: dict[str, Any]) -> Target:
    if options.get("place") is None:
        unused = sorted(set(PLACE_OPTIONS) & set(options))
        if unused:
            raise TypeError(f"option(s) {', '.join(unused)} need place=NAME")
        return cls(**options)
    if options.get("url"):
        raise TypeError("give url= or place=, not both: a place's serial port is its url")
    return _on_place(cls)(**options)


class OnPlace:
    """Mixin for a serial target whose port is a labgrid place's (see module doc)."""

    lab_place: Any = None
    lab_error: str | None = None

    def _attach(self, place: Any, coordinator: str | None, wait: float,
                resource: str | None, power_cycle: bool) -> str:
        """Hold the place; its serial URL, or '' (and :attr:`lab_error`) when it cannot
        be had."""
        from harness.lab.place import LabError, hold_place

        self.place_name = str(place)
        try:
            self.lab_place = hold_place(self.place_name, coordinator, float(wait),
                                        resource, cycle_power=bool(power_cycle))
            return self.lab_place.serial_url
        except LabError as exc:
            self.lab_error = f"labgrid place {self.place_name!r}: {exc}"
            if self.lab_place is not None:  # held, but without a usable serial port
                self.lab_place.release()
                self.lab_place = None
            return ""

    def availability(self) -> Availability:
        if self.lab_error:
            return Availability.no(self.lab_error)
        return super().availability()  # type: ignore[misc]

    def describe(self) -> dict[str, Any]:
        data: dict[str, Any] = super().describe()  # type: ignore[misc]
        data["place"] = (self.lab_place.identity if self.lab_place is not None
                         else {"place": self.place_name, "error": self.lab_error})
        return data

    def after_lost(self, exc: BaseException) -> None:
        """A device declared lost on a place with power: cycle its power, once per
        process, and say so in the failure's message (the case's record)."""
        place = self.lab_place
        if place is None or place.power_port() is None or getattr(self, "_cycled", False):
            return
        self._cycled = True
        from harness.lab.place import LabError

        try:
            place.power_cycle("after the device was declared lost")
            note = f"place {place.name!r}: power-cycled after the device was declared lost"
        except LabError as error:
            note = f"place {place.name!r}: power cycle after the loss failed: {error}"
        if exc.args:
            exc.args = (f"{exc.args[0]} [{note}]", *exc.args[1:])


@functools.cache
def _on_place(cls: type[Target]) -> Callable[..., Target]:
    """``cls`` on a place: built with the place's serial URL. Its class keeps ``cls``'s
    module, so run.json digests the same driver file either way."""
    from targets.serial.transport import DeviceLost

    def __init__(self: Any, configuration: str = "default", *, place: str,
                 coordinator: str | None = None, wait: float = 0.0,
                 resource: str | None = None, power_cycle: bool = True,
                 **options: Any) -> None:
        url = OnPlace._attach(self, place, coordinator, wait, resource, power_cycle)
        cls.__init__(self, configuration, url=url, **options)

    namespace: dict[str, Any] = {"__init__": __init__, "__module__": cls.__module__,
                                 "__doc__": f"{cls.__name__} on a labgrid place"}
    if hasattr(cls, "reached"):
        def reached(self: Any, call: Callable[[], Any]) -> Any:
            try:
                return cls.reached(self, call)  # type: ignore[attr-defined]
            except DeviceLost as exc:
                self.after_lost(exc)
                raise
        namespace["reached"] = reached
    return type(f"{cls.__name__}OnPlace", (OnPlace, cls), namespace)
