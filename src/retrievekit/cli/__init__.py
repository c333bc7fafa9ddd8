"""The ``retrievekit`` command line: thin commands over the public API."""
