"""The `oasst-data` command line: a thin typer layer over the `oasst_data` library.

Installed as the `oasst_data_cli` package (see pyproject.toml) so it never collides with
another top-level `cli` module.
"""
