"""Training and evaluation on the gold corpus: SmolVLM (Idefics3) from transformers, MLflow, TorchDistributor."""
