"""`python -m kaio_spec.cli` runs the `kaio` command (tests start the server this way)."""

from kaio_spec.cli import main

if __name__ == "__main__":
    main(prog_name="kaio")
