"""How the parts run: the `fleet` command line, typed settings and the project's local services."""
