"""`finevision release push`: the release folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

release_app = typer.Typer(no_args_is_help=True, help="The release folder (`finevision export`): push it to the Hub.")


@release_app.command("push")
def push(
    ctx: typer.Context,
    repo_id: Annotated[str, typer.Option("--repo-id", help="the Hub dataset repository, owner/name")],
    folder: Annotated[
        Path | None, typer.Option(help="release folder (default: export.release_dir or <lakehouse>/release)")
    ] = None,
    private: Annotated[bool, typer.Option(help="create the repository private")] = False,
    revision: Annotated[str | None, typer.Option(help="branch to push to (default main)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be uploaded; upload nothing")] = False,
) -> None:
    """Upload the release with huggingface_hub's resumable large-folder upload (a re-run resumes)."""
    from etl.release_push import push as push_release
    from etl.tables import TableRef

    options = ctx.obj
    config = options.config
    source = str(folder) if folder else config.export.release_dir or TableRef.of(config, "release").path
    if source is None:
        typer.echo("error: tables live in a catalog: pass --folder or set export.release_dir", err=True)
        raise typer.Exit(2)
    dry = dry_run or options.dry_run
    try:
        files = push_release(source, repo_id, private, revision, dry_run=dry)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for f in files:
        typer.echo(f"{f.bytes:>14,}  {f.path}")
    verb = "would upload" if dry else "uploaded"
    typer.echo(f"{verb} {len(files)} files, {sum(f.bytes for f in files):,} bytes, to datasets/{repo_id}")
