"""Run records: the typed records, their files and schemas, the statistics built from them, merging
runs made apart, and the machine fingerprint recorded with every run.
"""
