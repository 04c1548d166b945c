"""Launch files and the demo's player node.

`launch` / `launch_ros` cannot be installed here, so the launch files are compiled and then run
against stand-ins of those modules that only record what they are given (an OpaqueFunction is called
with the launch configurations, as `ros2 launch` would): enough to check that every executable,
parameter, remapping and launch argument they name exists, with the right type, and which parameter
values the node ends up with.
"""

import importlib.util
import json
import os
import py_compile
import re
import subprocess
import sys
import types

import pytest

from helpers.ros_harness import FASTDDS_PROFILE, REPO, START_TIMEOUT_S, ros_environment, unique_domain_id
from samwise_ros.ros import player
from samwise_ros.params import PARAMETERS_BY_NAME, load_node_parameters

LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
NODE_TOPICS = {"image", "image/compressed", "depth", "camera_info", "text_query", "mask", "result", "overlay",
               "centroid", "markers", "cme_switch"}
NODE_PARAMETER_DEFAULTS = {name: spec.default for name, spec in PARAMETERS_BY_NAME.items()}
STAND_INS = {
    "launch": ["LaunchDescription"],
    "launch.actions": ["DeclareLaunchArgument", "IncludeLaunchDescription", "OpaqueFunction",
                       "SetEnvironmentVariable"],
    "launch.conditions": ["IfCondition"],
    "launch.launch_description_sources": ["PythonLaunchDescriptionSource"],
    "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution"],
    "launch_ros": [],
    "launch_ros.actions": ["Node"],
    "launch_ros.parameter_descriptions": ["ParameterValue"],
    "launch_ros.substitutions": ["FindPackageShare"],
}


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    def perform(self, context) -> str:
        return context.launch_configurations[self.args[0]]


STAND_IN_BASES = {"LaunchConfiguration": LaunchConfiguration}  # stand-ins that do more than record


def load_description(path, monkeypatch):
    for module_name, class_names in STAND_INS.items():
        module = types.ModuleType(module_name)
        for class_name in class_names:
            setattr(module, class_name, type(class_name, (STAND_IN_BASES.get(class_name, Recorded),), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert type(description).__name__ == "LaunchDescription"
    return description.args[0]


def of_kind(entities, kind):
    return [entity for entity in entities if type(entity).__name__ == kind]


def walk(value):
    """Every Recorded object inside value (arguments, lists, dicts), depth first."""
    if isinstance(value, Recorded):
        yield value
        for item in (*value.args, *value.kwargs.values()):
            yield from walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk(item)


def launch_context(configurations: dict):
    return types.SimpleNamespace(launch_configurations=configurations)


def launched_nodes(entities, configurations: dict) -> list:
    """The Node actions of a launch file, those of its OpaqueFunctions with these launch configurations."""
    nodes = of_kind(entities, "Node")
    for opaque in of_kind(entities, "OpaqueFunction"):
        nodes += of_kind(opaque.kwargs["function"](launch_context(configurations)), "Node")
    return nodes


def typed_value(value, configurations: dict, value_type):
    """The value a parameter gets with these launch configurations."""
    if type(value).__name__ != "ParameterValue":
        return value
    (text,) = value.args
    if isinstance(text, LaunchConfiguration):
        text = text.perform(launch_context(configurations))
    declared = value.kwargs["value_type"]
    assert declared is value_type, f"{value.args[0]}: {declared} for a {value_type} parameter"
    return {"true": True, "false": False}[text] if declared is bool else declared(text)


def declared_defaults(entities) -> dict:
    """Launch argument name: its default text, for what a launch file declares."""
    arguments = {a.args[0]: a for a in of_kind(entities, "DeclareLaunchArgument")}
    used = {r.args[0] for r in walk(entities) if type(r).__name__ == "LaunchConfiguration"}
    assert used <= set(arguments), f"undeclared launch arguments: {used - set(arguments)}"
    assert all(a.kwargs.get("description") for a in arguments.values())
    return {name: argument.kwargs["default_value"] for name, argument in arguments.items()}


def included_defaults(include, defaults: dict, monkeypatch):
    """The entities of the launch file an IncludeLaunchDescription names, and its launch arguments'
    defaults as the including file sets them (its own defaults where it passes a launch argument)."""
    (source,) = include.args
    (path_parts,) = source.args[0].args
    path = REPO / "launch" / path_parts[-1]
    assert path_parts[-2] == "launch" and path.is_file(), path_parts
    entities = load_description(path, monkeypatch)
    resolved = declared_defaults(entities)
    for name, value in include.kwargs["launch_arguments"]:
        assert name in resolved, f"{path.name} declares no launch argument {name!r}"
        if isinstance(value, LaunchConfiguration):
            value = defaults[value.args[0]]
        assert isinstance(value, (str, Recorded)), (name, value)  # a text or a substitution
        resolved[name] = value
    return path, entities, resolved


def typed_entry(path, node, entry: dict, configurations: dict, table: dict) -> dict:
    """One dict of a node's `parameters`, with the values they get with these launch configurations,
    typed as `table`'s defaults declare."""
    values = {}
    for name, value in entry.items():
        assert name in table, f"{path.name}: {node.kwargs['executable']} has no parameter {name!r}"
        values[name] = typed_value(value, configurations, type(table[name]))
    return values


def typed_parameters(path, node, configurations: dict, table: dict) -> dict:
    """The parameters a node is given, parameters files aside (typed_entry)."""
    values = {}
    for entry in node.kwargs["parameters"]:
        if isinstance(entry, dict):  # else a parameters file
            values.update(typed_entry(path, node, entry, configurations, table))
    return values


def node_parameters(path, node, configurations: dict) -> dict:
    """The parameters samwise_node runs with, applied as ROS applies them: each entry of `parameters` in
    turn, a parameters file (read as the node reads it) or single values, later ones overriding."""
    values = {}
    for entry in node.kwargs["parameters"]:
        if isinstance(entry, dict):
            values.update(typed_entry(path, node, entry, configurations, NODE_PARAMETER_DEFAULTS))
        else:
            values.update(load_node_parameters(entry.perform(launch_context(configurations))))
    return values


def every_parameter_given(configurations: dict) -> dict:
    """The launch configurations with each empty one named like a node parameter given a valid value (the
    parameter's default, or any text where that is empty)."""
    given = dict(configurations)
    for name, value in configurations.items():
        if value == "" and name in NODE_PARAMETER_DEFAULTS:
            default = NODE_PARAMETER_DEFAULTS[name]
            given[name] = str(default).lower() if isinstance(default, bool) else str(default) or "given"
    return given


def check_node(path, node, configurations: dict):
    executable = node.kwargs["executable"]
    assert node.kwargs["package"] == "samwise_ros" and (REPO / "scripts" / executable).is_file()
    if executable == "samwise_node":
        table = NODE_PARAMETER_DEFAULTS
        topics = NODE_TOPICS
        checks = {name: spec.problem for name, spec in PARAMETERS_BY_NAME.items()}
    else:
        table = {name: default for name, (default, _) in player.PARAMETERS.items()}
        topics = {"image"}
        checks = {}
    for name, value in typed_parameters(path, node, configurations, table).items():
        assert type(value) is type(table[name]), (name, value)
        assert name not in checks or checks[name](value) is None, (path.name, name, value)
    for source, _ in node.kwargs.get("remappings", []):
        assert source in topics, f"{path.name}: {executable} has no topic {source!r}"


def launched(path, configurations: dict, monkeypatch) -> list:
    """(launch file, node, its launch configurations) for every node that `path` starts with these launch
    configurations (its declared defaults where they name none), itself or through the files it includes."""
    entities = load_description(path, monkeypatch)
    configurations = {**declared_defaults(entities), **configurations}
    nodes = [(path, node, configurations) for node in launched_nodes(entities, configurations)]
    for include in of_kind(entities, "IncludeLaunchDescription"):
        included, included_entities, resolved = included_defaults(include, configurations, monkeypatch)
        nodes += [(included, node, resolved) for node in launched_nodes(included_entities, resolved)]
    return nodes


def started(nodes: list, executable: str) -> tuple:
    """The one (launch file, node, launch configurations) of `nodes` that runs `executable`."""
    (entry,) = [entry for entry in nodes if entry[1].kwargs["executable"] == executable]
    return entry


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_only_what_exists(path, monkeypatch):
    """Every node of the file, and of the files it includes with the arguments it passes them, with the
    launch arguments' defaults and with every parameter argument given."""
    py_compile.compile(str(path), doraise=True)
    defaults = declared_defaults(load_description(path, monkeypatch))
    nodes = launched(path, {}, monkeypatch) + launched(path, every_parameter_given(defaults), monkeypatch)
    assert nodes
    for source, node, configurations in nodes:
        check_node(source, node, configurations)


def test_every_node_parameter_is_a_launch_argument_described_by_the_table(monkeypatch):
    arguments = {a.args[0]: a.kwargs["description"]
                 for a in of_kind(load_description(REPO / "launch" / "samwise.launch.py", monkeypatch),
                                  "DeclareLaunchArgument")}
    for name, spec in PARAMETERS_BY_NAME.items():
        assert arguments[name].startswith(spec.description), name


def test_demo_launch_starts_the_player_and_the_node_for_rviz(monkeypatch):
    """The demo's node gets the player's topic, frame mode, reliable images and the overlay."""
    demo = REPO / "launch" / "demo.launch.py"
    defaults = declared_defaults(load_description(demo, monkeypatch))
    nodes = launched(demo, {}, monkeypatch)
    started(nodes, "samwise_player")
    included, node, resolved = started(nodes, "samwise_node")
    parameters = typed_parameters(included, node, resolved, NODE_PARAMETER_DEFAULTS)
    assert parameters["mode"] == "frame" and parameters["image_reliability"] == "reliable"
    assert parameters["publish_overlay"] is True and parameters["query"] == defaults["query"]
    assert resolved["image"] == defaults["image"] == "camera/image"
    assert resolved["namespace"] == defaults["namespace"]


ROBOT_PARAMETERS = "/**/samwise:\n  ros__parameters:\n    mode: frame\n    device: cpu\n    use_depth: true\n"


@pytest.mark.parametrize("launch_file", ["samwise.launch.py", "demo.launch.py"])
def test_a_parameters_file_value_holds_unless_its_launch_argument_is_given(launch_file, tmp_path, monkeypatch):
    params_file = tmp_path / "robot.yaml"
    params_file.write_text(ROBOT_PARAMETERS)

    def samwise_node_parameters(**arguments) -> dict:
        nodes = launched(REPO / "launch" / launch_file, {"params_file": str(params_file), **arguments}, monkeypatch)
        return node_parameters(*started(nodes, "samwise_node"))

    from_file = samwise_node_parameters()
    assert (from_file["mode"], from_file["device"], from_file["use_depth"]) == ("frame", "cpu", True)
    given = samwise_node_parameters(device="cuda:1", precision="fp16")
    assert (given["device"], given["precision"], given["use_depth"]) == ("cuda:1", "fp16", True)


def test_executables_are_declared_for_pip_and_colcon():
    setup = (REPO / "setup.py").read_text()
    cmake = (REPO / "CMakeLists.txt").read_text()
    executables = re.search(r"set\(_executables ([^)]*)\)", cmake).group(1).split()
    for name, module in (("samwise_node", "samwise_ros.ros.node"), ("samwise_player", "samwise_ros.ros.player")):
        assert f"{name} = {module}:main" in setup
        assert name in executables
        script = REPO / "scripts" / name
        assert os.access(script, os.X_OK) and f"from {module} import main" in script.read_text()


UDP_ONLY_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <transport_descriptors><transport_descriptor>
    <transport_id>udp_only</transport_id><type>UDPv4</type>
  </transport_descriptor></transport_descriptors>
  <participant profile_name="udp_only" is_default_profile="true"><rtps>
    <useBuiltinTransports>false</useBuiltinTransports>
    <userTransports><transport_id>udp_only</transport_id></userTransports>
  </rtps></participant>
</profiles></dds>
"""
# The receiver: a process of its own, as Fast DDS reads its profile once per process. It prints the
# frames it got and whether it has any shared memory mapped.
UDP_RECEIVER = """
import json, pathlib, sys, rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("udp_receiver", namespace=sys.argv[1])
frames = []
node.create_subscription(Image, "image", frames.append, 10)
while len(frames) < 3:
    rclpy.spin_once(node, timeout_sec=1.0)
shm = "/dev/shm/fastdds" in pathlib.Path("/proc/self/maps").read_text()
print("received", json.dumps({"shm": shm, "frames": [[f.encoding, f.height, f.width, f.header.frame_id,
                                                      f.header.stamp.sec + f.header.stamp.nanosec * 1e-9]
                                                     for f in frames]}))
node.destroy_node()
rclpy.try_shutdown()
"""


# player and receiver in a network namespace that has nothing but loopback (so discovery may use its
# default multicast: it cannot leave the namespace); the receiver's exit status is the script's
LOOPBACK_NAMESPACE_SCRIPT = """
set -e
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo
FASTDDS_DEFAULT_PROFILES_FILE="$SHIPPED_PROFILE" "$PYTHON" -m samwise_ros.ros.player \\
    --ros-args -r __ns:=/demo -p rate:=30.0 -p frame_id:=test_camera &
player=$!
set +e
FASTDDS_DEFAULT_PROFILES_FILE="$UDP_PROFILE" timeout 60 "$PYTHON" -c "$RECEIVER" /demo
status=$?
kill -INT $player
wait $player
echo "player exit status $?"
exit $status
"""


def test_player_publishes_the_demo_scene_as_a_camera_over_udp(tmp_path):
    """The player runs with the shipped profile, the receiver with a UDP-only one, so the frames can only
    have come over UDP: the shipped profile keeps UDP working. This runs in a loopback-only network
    namespace: there, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST is not needed (it would add Fast DDS' own
    shared-memory transport to the receiver and spoil the point)."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged network namespaces (unshare -rn) on this machine")
    udp_only = tmp_path / "udp_only.xml"
    udp_only.write_text(UDP_ONLY_PROFILE)
    env = dict(ros_environment(unique_domain_id()), ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET",
               SHIPPED_PROFILE=str(FASTDDS_PROFILE), UDP_PROFILE=str(udp_only), PYTHON=sys.executable,
               RECEIVER=UDP_RECEIVER)
    run = subprocess.run(["unshare", "-rn", "bash", "-c", LOOPBACK_NAMESPACE_SCRIPT], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=START_TIMEOUT_S + 60)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "player exit status 0" in output, output
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("received ")]
    report = json.loads(line.removeprefix("received "))
    assert not report["shm"]
    frames = report["frames"]
    assert all(frame[:4] == ["bgr8", 240, 320, "test_camera"] for frame in frames)
    stamps = [frame[4] for frame in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
