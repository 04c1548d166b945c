"""pip install for samwise_ros as a plain Python library.

The ROS 2 build (colcon, ament_cmake) uses CMakeLists.txt instead; the version comes from package.xml
for both.
"""
import glob
import importlib.util
import re
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "samwise_ros"
HERE = Path(__file__).resolve().parent


def package_version():
    text = (HERE / "package.xml").read_text(encoding="utf-8")
    return re.search(r"<version>\s*([^<\s]+)\s*</version>", text).group(1)


def long_description():
    readme = HERE / "README.md"
    return readme.read_text(encoding="utf-8") if readme.is_file() else ""


def tool_extras():
    """The tools' extras (`pip install 'samwise_ros[replay]'`), from samwise_ros/tools/launcher.py: the
    console scripts check them there, and it imports nothing outside the standard library."""
    spec = importlib.util.spec_from_file_location("launcher", HERE / PACKAGE / "tools" / "launcher.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    return launcher.EXTRAS


def share_files(directory):
    """(share/samwise_ros/<directory>, [files]) for every folder under <directory>, if it exists."""
    entries = []
    for folder in sorted({str(Path(f).parent) for f in glob.glob(f"{directory}/**/*", recursive=True)
                          if Path(f).is_file()}):
        files = sorted(f for f in glob.glob(f"{folder}/*") if Path(f).is_file())
        entries.append((f"share/{PACKAGE}/{folder}", files))
    return entries


setup(
    name=PACKAGE,
    version=package_version(),
    long_description=long_description(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # {"": "."} makes an editable install a plain .pth entry for the repository root (setuptools'
    # import-hook finder runs after site-packages, where `make venv` installs the generated
    # samwise_ros.msg as a namespace portion, which would then hide this package).
    package_dir={"": "."},
    package_data={f"{PACKAGE}.weights": ["demo/*"]},  # the bundled demo model (safetensors, config, tokenizer)
    python_requires=">=3.10",
    # What the library (model, tracker, node) imports, and what sam2 needs to build a model: sam2 itself is
    # installed apart, without its declared dependencies (README). rclpy and the messages come from ROS
    # (package.xml).
    install_requires=[
        "torch",
        "numpy",
        "safetensors",
        "transformers",
        "tokenizers",
        "pyyaml",
        "opencv-python-headless",
        "pillow",
        "tqdm",
        "hydra-core",
        "iopath",
    ],
    extras_require=tool_extras(),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("config"),
        *share_files("launch"),
    ],
    entry_points={
        "console_scripts": [
            # the tools start through the launcher, which checks their extra first
            "samwise-demo = samwise_ros.tools.launcher:demo",
            "samwise-replay = samwise_ros.tools.launcher:replay",
            "samwise-eval = samwise_ros.tools.launcher:evaluate",
            "samwise-train = samwise_ros.tools.launcher:train",
            "samwise-synthetic = samwise_ros.tools.launcher:synthetic",
            "samwise_node = samwise_ros.ros.node:main",
            "samwise_player = samwise_ros.ros.player:main",
        ],
    },
    zip_safe=False,
)
