"""FineVision's published reference figures (the FineVision paper), which our tables are compared with.

Plain constants, no imports: the rate stage's summary, the SQL views and the report read them here.
"""

# % of turns the FineVision judges scored 1..5, per rating axis (quality ratings).
RATING_SHARES = {
    "formatting": (0.5, 0.7, 1.1, 77.5, 20.3),
    "relevance": (2.9, 0.5, 14.7, 16.5, 65.4),
    "visual_dependency": (11.0, 20.4, 2.6, 24.2, 41.8),
    "image_correspondence": (8.1, 3.6, 17.3, 26.8, 44.1),
}

# Effective rank, participation ratio and diversity score of SSCD embeddings (d = 512), per dataset.
DIVERSITY = {
    "The Cauldron": (324.05, 129.22, 0.400),
    "LLaVA-Vision": (267.89, 87.05, 0.298),
    "Cambrian-7M": (359.73, 152.70, 0.458),
    "FineVision": (359.22, 182.52, 0.500),
}

# % of samples / % of answer tokens per category.
CATEGORY_SHARES = {
    "Captioning & Knowledge": (8.0, 3.9),
    "Chart & Table": (9.1, 6.3),
    "General VQA": (10.6, 6.9),
    "Grounding & Counting": (9.5, 23.7),
    "Mathematics": (2.3, 0.6),
    "Naive OCR": (14.3, 6.3),
    "OCR QA": (10.0, 32.4),
    "Science": (1.6, 0.4),
    "Text-only": (34.6, 19.6),
}

# The corpus's size.
TOTALS = {
    "samples": 24_322_193,
    "images": 17_372_293,
    "turns": 88_928_343,
    "question_tokens": 3_170_000_000,
    "answer_tokens": 9_460_000_000,
}
