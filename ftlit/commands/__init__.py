"""The subcommands beyond Lightning's own, one module each with a ``main(argv)``; ``ftlit.cli.COMMANDS`` maps
names to them."""
