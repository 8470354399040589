"""Simulated devices for ``shipei sim``: endpoints, fault plans, board and sensors."""
