"""``python -m cimc``: the command line (the same as the ``cimc`` script)."""

from cimc.cli import main

if __name__ == "__main__":
    main(prog_name="cimc")
