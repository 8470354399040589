"""Entry point of the built-in serial driver (``shipei.targets``: ``serial``)."""

from __future__ import annotations

from collections.abc import Iterable

from harness.driver.registry import TargetSpec


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(
        name="serial-board", factory="targets.serial.board:SerialBoardTarget",
        summary="a chip on a board over a serial line (Shipei serial protocol v1)")
    for sensor, what in (("imu", "a 6-axis IMU"), ("ultrasonic", "an ultrasonic ranger")):
        yield TargetSpec(
            name=f"serial-{sensor}", factory="targets.serial.sensors:SerialSensorTarget",
            kwargs={"sensor": sensor},
            summary=f"{what} streaming over a serial line (Shipei serial protocol v1)")
