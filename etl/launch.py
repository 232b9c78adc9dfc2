"""How spark-submit, EMR steps and Databricks wheel tasks launch the CLI.

They pass arguments in the order their job definitions read best: the stage first, then the
options (`spark-submit entrypoint.py embed --config s3://.../pipeline.yaml --profile emr`), while
the CLI's global options belong before the command. `main` moves global options that follow the
command in front of it and runs the CLI, so both orders work. It is also the `finevision`
console script.
"""

from __future__ import annotations

import sys

# The CLI's global options (etl/cli.py `main`) and whether each takes a value.
GLOBAL_OPTIONS = {
    "--config": True,
    "-c": True,
    "--set": True,
    "--lakehouse": True,
    "--profile": True,
    "--parent-run": True,
    "--dry-run": False,
    "--verbose": False,
    "-v": False,
}


def global_options_first(argv: list[str]) -> list[str]:
    """`argv` with every global option (and its value) placed before the command.

    The command is the first argument that is neither a global option nor a global option's
    value; everything else keeps its order. `--name=value` forms are recognised too."""
    head: list[str] = []
    tail: list[str] = []
    seen_command = False
    args = iter(argv)
    for arg in args:
        name = arg.split("=", 1)[0]
        if arg == "--":
            tail.append(arg)
            tail.extend(args)
            break
        if name in GLOBAL_OPTIONS:
            head.append(arg)
            if GLOBAL_OPTIONS[name] and "=" not in arg:
                value = next(args, None)
                if value is not None:
                    head.append(value)
            continue
        if not seen_command and not arg.startswith("-"):
            seen_command = True
        (tail if seen_command else head).append(arg)
    return head + tail


def main(argv: list[str] | None = None) -> None:
    from etl.cli import app

    app(args=global_options_first(list(sys.argv[1:] if argv is None else argv)), prog_name="finevision")
