"""The ``shipei`` command. Each ``cmd_*.py`` module here adds one subcommand."""
