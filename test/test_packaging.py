"""Installing with pip: setup.py declares what the package imports (the library's needs in
install_requires, the tools' optional packages as extras, ROS's in package.xml), and a tool started
without its extra says which one to install."""

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from samwise_ros.tools import launcher

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "samwise_ros"
# installed apart, without its declared dependencies (README): they would pull torchvision
INSTALLED_APART = {"sam2"}
SETUP_METADATA = """
import json
import setuptools  # distutils is setuptools' own from here on
from distutils.core import run_setup
setup = run_setup("setup.py", stop_after="init")
print(json.dumps({"packages": setup.packages, "install_requires": setup.install_requires,
                  "extras_require": setup.extras_require, "console_scripts": setup.entry_points["console_scripts"]}))
"""
PRINT_LOADED_FILES = "print(*[getattr(m, '__file__', None) for m in list(sys.modules.values())], sep='\\n')\n"


@pytest.fixture(scope="module")
def setup_py() -> dict:
    done = subprocess.run([sys.executable, "-c", SETUP_METADATA], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: how pip compares distribution names


def distribution_names(requirements: list[str]) -> set[str]:
    return {normalized(re.match(r"[A-Za-z0-9._-]+", text).group()) for text in requirements}


def ros_dependencies() -> set[str]:
    return {element.text for element in ElementTree.parse(REPO / "package.xml").getroot()
            if element.tag.endswith("depend")}


def third_party_imports(path: Path) -> set[str]:
    """The top-level names that `path` imports (anywhere in it) from outside the standard library and
    this package, less those that ROS or a separate install provides."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - ros_dependencies() - INSTALLED_APART - {"samwise_ros"}


def undeclared_imports(paths, declared: set[str]) -> dict[str, list[str]]:
    """import name -> the files that import it from a distribution not in `declared`."""
    distributions = packages_distributions()
    undeclared: dict[str, list[str]] = {}
    for path in paths:
        for name in third_party_imports(path):
            if not {normalized(d) for d in distributions.get(name, [])} & declared:
                undeclared.setdefault(name, []).append(str(path.relative_to(REPO)))
    return undeclared


def blocking(packages) -> str:
    """Python lines that make `packages` unimportable, as if they were not installed."""
    return f"import sys\nfor name in {sorted(packages)!r}:\n    sys.modules[name] = None\n"


def test_setup_py_installs_the_package_and_nothing_else(setup_py):
    assert "samwise_ros" in setup_py["packages"]
    assert all(p == "samwise_ros" or p.startswith("samwise_ros.") for p in setup_py["packages"])  # no research/


def test_every_import_of_the_package_is_declared(setup_py):
    declared = distribution_names(setup_py["install_requires"]).union(
        *(distribution_names(requirements) for requirements in setup_py["extras_require"].values()))
    assert not undeclared_imports(PACKAGE.rglob("*.py"), declared)


def test_the_library_and_the_node_need_none_of_the_extras(setup_py):
    """Imported with every extra's packages missing; what they import is in install_requires."""
    extras = {name for requirements in setup_py["extras_require"].values() for name in requirements}
    code = blocking(extras) + "import samwise_ros, samwise_ros.ros.node, samwise_ros.ros.player\n" + PRINT_LOADED_FILES
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = [Path(line) for line in done.stdout.splitlines() if Path(line).is_relative_to(PACKAGE)]
    assert PACKAGE / "tracker.py" in loaded and PACKAGE / "ros" / "node.py" in loaded
    assert not undeclared_imports(loaded, distribution_names(setup_py["install_requires"]))


@pytest.mark.parametrize("tool, extra", [("samwise-demo", "eval"), ("samwise-replay", "replay"),
                                         ("samwise-eval", "eval"), ("samwise-train", "train"),
                                         ("samwise-synthetic", "train")])
def test_a_tool_started_without_its_extra_says_which_to_install(setup_py, tool, extra):
    scripts = dict((part.strip() for part in line.split("=")) for line in setup_py["console_scripts"])
    module, function = scripts[tool].split(":")
    missing = setup_py["extras_require"][extra]
    code = blocking(missing) + f"from {module} import {function}\nsys.exit({function}(['--help']))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""  # the tool itself never started
    assert done.stderr.splitlines() == [f"{tool} needs the {extra} extra: pip install 'samwise_ros[{extra}]' "
                                        f"(missing: {', '.join(missing)})"]


def test_a_tool_with_its_extra_starts_with_the_arguments_given(capsys):
    with pytest.raises(SystemExit) as exited:
        launcher.synthetic(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: samwise-synthetic")
