"""``fer-edge``: the live loop on a device."""

from __future__ import annotations

import click

from .cliutil import not_implemented


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fer-edge")
def main() -> None:
    """Facial emotion recognition on edge devices."""


@main.command()
def run() -> None:
    """camera/video -> face detection -> crop -> classification -> tracking -> outputs."""
    not_implemented("fer-edge run", "edge runtime issue")


if __name__ == "__main__":
    main()
