"""The complete demonstration with nothing but this package: a player publishing the bundled
synthetic video as a camera, the samwise node tracking a query in it with the bundled demo weights,
and the overlay for rviz (`samwise-demo` runs the same two nodes without `ros2 launch` and records).

    ros2 launch samwise_ros demo.launch.py
    ros2 launch samwise_ros demo.launch.py checkpoint:=/path/to/model video:=/path/to/clip.mp4 query:="the dog"

Topics (in the namespace argument, default samwise_demo): camera/image in; mask, result, overlay,
centroid, markers, cme_switch out. The Fast DDS shared-memory profile of this package is used unless
shm_profile:=false. The node comes from samwise.launch.py, so both launch files start it alike: its
parameters come from params_file, then the demo's settings (query, mode, reliable images, the overlay)
and the arguments given (checkpoint, tokenizer, device, precision: empty ones leave the file's values).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

SHARE = FindPackageShare("samwise_ros")
ARGUMENTS = {  # launch argument: (default, description)
    "namespace": ("samwise_demo", "namespace of both nodes"),
    "params_file": (PathJoinSubstitution([SHARE, "config", "samwise.yaml"]), "the node's parameters file"),
    "checkpoint": ("", "model directory or released .pth (empty: from params_file)"),
    "tokenizer": ("", "tokenizer directory for a released .pth (empty: from params_file)"),
    "query": ("the red ball rolling to the left", "what to segment"),
    "device": ("", "auto, cpu or cuda:N (empty: from params_file)"),
    "precision": ("", "auto, fp32, bf16 or fp16 (empty: from params_file)"),
    "mode": ("frame", "clip or frame"),
    "image": ("camera/image", "the camera topic between player and node"),
    "video": ("", "video file for the player (empty: the bundled synthetic scene)"),
    "rate": ("5.0", "player frame rate"),
    "shm_profile": ("true", "use this package's Fast DDS shared-memory profile"),
}
PASSED_TO_NODE = ("namespace", "params_file", "checkpoint", "tokenizer", "query", "device", "precision", "mode",
                  "image")
NODE_SETTINGS = {  # samwise.launch.py arguments fixed by the demo
    "image_reliability": "reliable",  # the player publishes reliably and the demo should not lose frames
    "publish_overlay": "true",
}


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in ARGUMENTS.items()]
    shm_profile = SetEnvironmentVariable(
        "FASTDDS_DEFAULT_PROFILES_FILE", PathJoinSubstitution([SHARE, "config", "fastdds_shm.xml"]),
        condition=IfCondition(LaunchConfiguration("shm_profile")))
    player = Node(
        package="samwise_ros",
        executable="samwise_player",
        name="samwise_player",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[{
            "video": ParameterValue(LaunchConfiguration("video"), value_type=str),
            "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float),
        }],
        remappings=[("image", LaunchConfiguration("image"))],
    )
    samwise = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([SHARE, "launch", "samwise.launch.py"])),
        launch_arguments=[*((name, LaunchConfiguration(name)) for name in PASSED_TO_NODE),
                          *NODE_SETTINGS.items()],
    )
    return LaunchDescription([*arguments, shm_profile, player, samwise])
