"""The networks (`networks`), their training and checkpoints (`train`), and two experiment commands over the
training recipe: controlled runs that change one setting at a time (`recipe`) and a ladder of ever easier tasks
(`learnability`)."""

from .networks import (
    ARCHS, XrayNet, small_features, large_features, resnet18_features, build_model, load_weights,
    count_parameters,
)
