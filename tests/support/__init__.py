"""The tests' one fixture package: config files, chains and their session templates, task submitters."""
