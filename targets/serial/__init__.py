"""The serial driver: boards and sensors on a serial line (see docs/serial.md).

- :mod:`.protocol` frames and payloads of the wire protocol (docs/protocol.md);
- :mod:`.receiver` resynchronising frame receiver; :mod:`.transport` pyserial link;
- :mod:`.board` the ``serial-board`` target; :mod:`.sensors` ``serial-imu`` and
  ``serial-ultrasonic``; :mod:`.groundtruth` motions and reference recordings;
- :mod:`.sim` the simulators behind ``shipei sim`` (:mod:`.cli`).
"""
