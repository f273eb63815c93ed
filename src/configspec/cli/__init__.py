"""The ``configspec`` command line: thin wrappers that parse, call the library, render."""
