"""spark-submit shim: `spark-submit entrypoint.py [global options] <command> ...`."""

from etl.cli import app

if __name__ == "__main__":
    app()
