"""spark-submit shim: `spark-submit entrypoint.py <command> [options]` (options before or after
the command), for example `spark-submit entrypoint.py run --config pipeline.yaml --profile emr`.

The `finevision_etl` wheel must be installed in the driver's and the executors' Python (a venv
packed with venv-pack on EMR, a cluster library on Databricks, `pip install` elsewhere)."""

from etl.launch import main

if __name__ == "__main__":
    main()
