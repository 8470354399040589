"""The worker: a target runs in a subprocess (the process host and the worker's main), reached over
the wire (frames and raw tensors), under a memory limit; how a process exits and what the host
says about OOM kills.
"""
