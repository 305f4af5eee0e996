"""The build pipeline: a model and labelled data -> a package carrying its profile (``edgeinf.build``).

Example:
    >>> import edgeinf, torchvision
    >>> model = torchvision.models.resnet18(num_classes=10)
    >>> result = edgeinf.build(model, "images/", edgeinf.BuildConfig(input_shape=(3, 64, 64)), out="pkg")
"""
from edgeinf.builder.config import BuildConfig
from edgeinf.builder.data import BuildData, load_data
from edgeinf.builder.pipeline import STAGES, BuildResult, build, work_dir

__all__ = ["BuildConfig", "BuildData", "BuildResult", "STAGES", "build", "load_data", "work_dir"]
