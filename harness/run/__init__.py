"""The run: the pytest plugin, which cases run (shards, resume, retry), sending cases ahead to the
workers, the case items, the targets of a session, and the run writer.
"""
