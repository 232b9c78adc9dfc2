"""The logged model serves: its input example validates when logged, a serving request built from
it is answered, and the served answer is the one `finevision evaluate` generates."""

import io
import json
import logging

import pandas as pd


def test_the_logged_model_validates_its_input_example_and_answers_as_evaluation(tmp_path, mlflow_store):
    import mlflow
    from mlflow.models import convert_input_example_to_serving_input
    from mlflow.pyfunc.scoring_server import infer_and_parse_data
    from PIL import Image

    from etl.config import load_config
    from etl.train.config import load_train_config
    from etl.train.data import prompt_text
    from etl.train.evaluate import generate
    from etl.train.model import build_model, build_processor
    from etl.train.run import log_model, model_example

    pipeline = load_config(overrides=[f"mlflow.tracking_uri=sqlite:///{mlflow_store(tmp_path / 'm.db')}"])
    config = load_train_config("tiny")
    processor = build_processor(config, pipeline.clean.tokenizer)
    model = build_model(config, processor)
    final = tmp_path / "final"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    mlflow.set_tracking_uri(pipeline.mlflow.tracking_uri)
    run = mlflow.MlflowClient().create_run(mlflow.create_experiment("serving")).info.run_id

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("mlflow").addHandler(handler)
    try:
        uri, _ = log_model(str(final), run, pipeline.mlflow.tracking_uri, None, None)
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    failures = [r.getMessage() for r in records if "validate" in r.getMessage() or "does not support" in r.getMessage()]
    assert failures == []

    example = model_example()
    info = mlflow.models.get_model_info(uri)
    assert info.run_id == run and info.saved_input_example_info is not None
    assert info.signature.inputs.input_names() == ["question", "image"]

    # the request a serving endpoint gets (JSON, the image base64), answered by the loaded pyfunc
    served = mlflow.pyfunc.load_model(uri)
    request = convert_input_example_to_serving_input(example)
    assert request is not None and '"dataframe_split"' in request
    data = infer_and_parse_data(json.loads(request), served.metadata.get_input_schema())
    answers = served.predict(data, params={"max_new_tokens": 5})
    assert isinstance(answers, pd.DataFrame) and list(answers.columns) == ["answer"] and len(answers) == 1

    # the same answer as evaluation's generate for that question and image
    image = Image.open(io.BytesIO(example["image"][0])).convert("RGB")
    chat = served.unwrap_python_model()
    expected = generate(chat.model, chat.processor, "cpu", [prompt_text(example["question"][0], 1)], [[image]], 5)
    assert list(answers["answer"]) == expected
