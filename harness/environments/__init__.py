"""Target environments: where a worker runs when its SDK cannot share the harness's interpreter
(virtual environments, foreign-architecture root filesystems).
"""
