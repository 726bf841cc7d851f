"""Bag tools (issue 10): read and write rosbag2 bags with rosbags, record and play them over ROS 2.

The core (typestore, reader, writer) needs no rclpy; ``record``/``play`` do.
"""

from fatigue_llm.bags.errors import BagError
from fatigue_llm.bags.reader import BagMessage, BagReader, TopicInfo, open_bag
from fatigue_llm.bags.typestore import DEFAULT_DISTRO, DISTROS, get_typestore, new_message
from fatigue_llm.bags.writer import DEFAULT_STORAGE, METADATA_VERSION, STORAGES, BagWriter

__all__ = [
    "DEFAULT_DISTRO", "DEFAULT_STORAGE", "DISTROS", "METADATA_VERSION", "STORAGES",
    "BagError", "BagMessage", "BagReader", "BagWriter", "TopicInfo", "get_typestore", "new_message", "open_bag",
]
