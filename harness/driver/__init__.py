"""The driver API (the system under test's side): what a framework, chip or sensor driver
implements, how targets are found, and what a runtime takes by probe.
"""
