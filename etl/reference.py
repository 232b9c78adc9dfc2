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
