"""Install edgeinf: the device runtime stays light (numpy, onnxruntime, psutil); the rest is extras."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _version() -> str:
    for line in (ROOT / "edgeinf" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("edgeinf/__init__.py has no __version__")


# The top level is the user's: exporters/, kernels/ and boards/ install as edgeinf.* (never as
# top-level packages of their own, which would clash with other projects).
PACKAGE_DIRS = {
    "edgeinf": "edgeinf",
    "edgeinf.exporters": "exporters",
    "edgeinf.kernels": "kernels",
    "edgeinf.boards": "boards",
}


def _packages() -> list:
    names = []
    for name, src in PACKAGE_DIRS.items():
        names.append(name)
        names += [f"{name}.{sub}" for sub in find_packages(str(ROOT / src))]
    return sorted(set(names))


EXTRAS = {
    # torch is deliberately absent: pip would choose a platform build (a 5 GB CUDA wheel on x86,
    # nothing usable on Jetson). Install the right torch first; see README "Install".
    "build": ["onnx>=1.16", "onnxscript>=0.1", "scikit-learn>=1.3", "pillow>=9"],  # pillow: image-folder data
    # torchvision/timm likewise pull torch: install them beside the torch you chose.
    "trt": ["tensorrt>=8.6", "pycuda>=2022.1"],
    "cuda": ["pycuda>=2022.1"],
    "plot": ["matplotlib>=3.6"],
    "dev": ["pytest>=7.4", "hypothesis>=6.80", "matplotlib>=3.6", "scikit-learn>=1.3"],
}

setup(
    name="edgeinf",
    version=_version(),
    description="Adaptive inference on edge devices: branch spaces, oracle bounds, low-bit export, budgeted runtime",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=_packages(),
    package_dir=dict(PACKAGE_DIRS),
    package_data={
        "edgeinf.kernels": ["*.cu", "*.cuh", "prebuilt/*"],
        "edgeinf.boards": ["*.toml"],
    },
    install_requires=[
        "numpy>=1.22",
        "onnxruntime>=1.16",
        "psutil>=5.9",
        'tomli>=2.0; python_version<"3.11"',
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["edgeinf=edgeinf.cli:entry"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
