"""The trained model as an MLflow pyfunc, logged from this file as code (`etl.train.run.log_model`):
a DataFrame of `question` (text) and `image` (an encoded image, PNG or JPEG; empty bytes for a
question without one) -> `answer`, the greedy reply of at most `max_new_tokens` (a parameter,
default 16) tokens, as `finevision evaluate` generates it.

It reads the saved folder (artifact `model`: weights, processor and the chat template of the
training format) with transformers alone and prompts through that chat template, so serving needs
nothing of this project. `unwrap_python_model()` gives the loaded `model` and `processor`.
"""

from __future__ import annotations

import io

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

END_OF_UTTERANCE = "<end_of_utterance>"  # etl.train.model.END_OF_UTTERANCE, where a reply ends


class ChatModel(PythonModel):
    def load_context(self, context) -> None:
        from transformers import AutoProcessor, Idefics3ForConditionalGeneration

        folder = context.artifacts["model"]
        self.processor = AutoProcessor.from_pretrained(folder)
        self.model = Idefics3ForConditionalGeneration.from_pretrained(folder).eval()

    def answer(self, question: str, image: bytes | None, max_new_tokens: int) -> str:
        import torch
        from PIL import Image

        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
        prompt = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        tokenizer = self.processor.tokenizer
        if image:
            picture = Image.open(io.BytesIO(image)).convert("RGB")
            inputs = self.processor(text=[prompt], images=[[picture]], return_tensors="pt")
        else:
            inputs = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE),
            )
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        max_new_tokens = int((params or {}).get("max_new_tokens", 16))
        answers = [
            self.answer(question, image, max_new_tokens)
            for question, image in zip(model_input["question"], model_input["image"], strict=True)
        ]
        return pd.DataFrame({"answer": answers})


mlflow.models.set_model(ChatModel())
