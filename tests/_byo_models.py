"""Factories for ``--arch tests._byo_models:NAME`` in the build tests (tiny split models, 1x8x8 inputs)."""
from test_space_tiny_model import tiny_cnn, tiny_vit


def cnn():
    """The tiny CNN without exits (the build attaches and trains them)."""
    return tiny_cnn(exits=())


def vit():
    return tiny_vit()
