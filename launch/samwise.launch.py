"""The samwise node alone, for a real camera.

    ros2 launch samwise_ros samwise.launch.py image:=/camera/color/image_raw \
        checkpoint:=/path/to/model query:="the person in the red shirt" device:=cuda:0

Parameters come from params_file (default: the package's config/samwise.yaml); every node parameter is
also a launch argument (named, described and typed by the node's own table, samwise_ros/params.py), which
overrides the file only when it is given (an empty one, the default, leaves the file's value). With
use_depth:=true, depth (aligned to the colour image) and camera_info are paired with the colour image
for a 3-D centroid.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from samwise_ros.params import PARAMETERS

TOPICS = {  # the node's topic: (launch argument, default, description)
    "image": ("image", "/camera/color/image_raw", "colour image topic (sensor_msgs/Image)"),
    "image/compressed": ("compressed_image", "/camera/color/image_raw/compressed",
                         "compressed colour image topic, used with image_transport:=compressed"),
    "depth": ("depth", "/camera/aligned_depth_to_color/image_raw", "depth aligned to the colour image"),
    "camera_info": ("camera_info", "/camera/aligned_depth_to_color/camera_info", "intrinsics of the depth image"),
    "text_query": ("text_query", "text_query", "referring-expression topic (std_msgs/String)"),
}


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("params_file", description="parameters file",
                              default_value=PathJoinSubstitution([FindPackageShare("samwise_ros"), "config",
                                                                  "samwise.yaml"])),
    ]
    arguments += [DeclareLaunchArgument(argument, default_value=default, description=description)
                  for argument, default, description in TOPICS.values()]
    arguments += [DeclareLaunchArgument(spec.name, default_value="",
                                        description=f"{spec.description} (empty: from params_file)")
                  for spec in PARAMETERS]
    return LaunchDescription([*arguments, OpaqueFunction(function=samwise_node)])


def samwise_node(context):
    """The node with the parameters file, then the parameter arguments that were given (an OpaqueFunction:
    which ones were given is known only once the launch configurations are)."""
    given = {spec.name: ParameterValue(text, value_type=type(spec.default)) for spec in PARAMETERS
             if (text := LaunchConfiguration(spec.name).perform(context))}
    return [Node(
        package="samwise_ros",
        executable="samwise_node",
        name="samwise",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), given],
        remappings=[(topic, LaunchConfiguration(argument)) for topic, (argument, _, _) in TOPICS.items()],
    )]
