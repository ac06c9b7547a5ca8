"""The ML core: backbones, decoding and preprocessing, features, training, export, prediction, evaluation.

Nothing here imports the web service, the database layer or the CLI.
"""
