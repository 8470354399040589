"""Reports from records: JUnit XML, the operator matrix, the built-in reports and writing them when
a run ends.
"""
