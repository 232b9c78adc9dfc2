"""Distribution of unified GUI actions per subset (FineVision's single action space).

Only subsets whose assistant turns parse as unified calls are counted; other subsets' answers
are prose and do not appear.
"""

from __future__ import annotations

import json

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import LongType, MapType, StringType

from etl.schema import require_columns
from etl.sources.gui_trajectory import UNPARSED, action_counts


@pandas_udf(MapType(StringType(), LongType()))  # type: ignore[call-overload]  # stubs omit MapType; Spark has it
def _counts(assistant_texts: pd.Series) -> pd.Series:
    return assistant_texts.map(lambda texts: dict(action_counts([("", t) for t in json.loads(texts)])))


def action_distribution(samples: DataFrame) -> DataFrame:
    """(subset, action, count, share) for subsets with unified GUI actions."""
    require_columns(samples, ["subset", "texts"], "action_distribution")
    counted = samples.select("subset", _counts(F.to_json("texts.assistant")).alias("counts"))
    exploded = counted.select("subset", F.explode("counts").alias("action", "count"))
    totals = exploded.groupBy("subset", "action").agg(F.sum("count").alias("count"))
    gui = totals.filter(F.col("action") != UNPARSED)
    share = F.col("count") / F.sum("count").over(Window.partitionBy("subset"))
    return gui.select("subset", "action", "count", share.cast("float").alias("share"))
