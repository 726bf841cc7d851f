"""rosbags typestores: a ROS 2 distro's standard messages plus this repository's ``fatigue_msgs``.

No rclpy: the typestore (de)serialises CDR in pure Python, so bags can be read and written anywhere.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.base import Nodetype, TypesysError
from rosbags.typesys.store import Typestore

from fatigue_llm.bags.errors import BagError

# distro -> rosbags store; the first entries are the ones rosbag2 users meet today
_STORES = {
    "kilted": Stores.ROS2_KILTED,
    "jazzy": Stores.ROS2_JAZZY,
    "humble": Stores.ROS2_HUMBLE,
    "iron": Stores.ROS2_IRON,
}
DISTROS: tuple[str, ...] = tuple(_STORES)
DEFAULT_DISTRO = "kilted"

MSG_PACKAGE = "fatigue_msgs"


def msg_dir() -> Path:
    """The repository's ``fatigue_msgs/msg`` (the source of truth), else the installed share folder."""
    source = Path(__file__).resolve().parents[2] / MSG_PACKAGE / "msg"
    installed = Path(sys.prefix) / "share" / MSG_PACKAGE / "msg"
    return source if source.is_dir() or not installed.is_dir() else installed


def check_distro(distro: str) -> str:
    if distro not in _STORES:
        raise ValueError(f"unknown ROS 2 distro {distro!r} (expected one of {', '.join(DISTROS)})")
    return distro


def custom_message_types(folder: Path | None = None) -> dict[str, tuple]:
    """Parse every ``<msg_dir>/*.msg`` as ``fatigue_msgs/msg/<Name>`` (a type added later is picked up)."""
    types: dict[str, tuple] = {}
    for path in sorted((folder or msg_dir()).glob("*.msg")):
        name = f"{MSG_PACKAGE}/msg/{path.stem}"
        try:
            types.update(get_types_from_msg(path.read_text(encoding="utf-8"), name))
        except Exception as error:  # noqa: BLE001 - the rosbags parser raises several kinds
            raise BagError(path, f"cannot parse message definition {name}: {error}") from None
    return types


def get_typestore(distro: str = DEFAULT_DISTRO) -> Typestore:
    """The distro's rosbags store with our messages registered (cached per distro: do not register into it)."""
    return _cached_store(check_distro(distro))


@functools.cache
def _cached_store(distro: str) -> Typestore:
    return build_typestore(distro)


def build_typestore(distro: str = DEFAULT_DISTRO) -> Typestore:
    """A new store (not cached): the distro's messages plus every fatigue_msgs .msg.

    All .msg files are registered in one call, so messages that reference each other
    (DriverObservation -> DriverEvent) resolve regardless of file order.
    """
    store = _rosbags_typestore(_STORES[check_distro(distro)])
    folder = msg_dir()
    if folder.is_dir():
        try:
            store.register(custom_message_types(folder))
        except TypesysError as error:
            raise BagError(folder, f"cannot register {MSG_PACKAGE} in the {distro} typestore: {error}") from None
    return store


_NUMPY_TYPES = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "octet": np.uint8,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
    "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


def _default(store: Typestore, desc: tuple) -> object:
    nodetype, spec = desc
    if nodetype == Nodetype.BASE:
        name = spec[0]
        return False if name == "bool" else "" if name in ("string", "wstring") else \
            0.0 if name.startswith("float") else 0
    if nodetype == Nodetype.NAME:
        return new_message(spec, typestore=store)
    element, length = spec
    numeric = element[0] == Nodetype.BASE and element[1][0] in _NUMPY_TYPES
    if nodetype == Nodetype.ARRAY:
        return np.zeros(length, _NUMPY_TYPES[element[1][0]]) if numeric else \
            [_default(store, element) for _ in range(length)]
    return np.zeros(0, _NUMPY_TYPES[element[1][0]]) if numeric else []  # sequence


def new_message(msgtype: str, /, *, typestore: Typestore | None = None, **fields: object) -> object:
    """A typestore message with ``fields`` set and every other field zero/empty (like a ROS message's
    default constructor; rosbags' classes require every field)."""
    store = typestore if typestore is not None else get_typestore()
    if msgtype not in store.fielddefs:
        raise KeyError(f"unknown message type {msgtype}")
    values = {name: _default(store, desc) for name, desc in store.fielddefs[msgtype][1] if name not in fields}
    return store.types[msgtype](**values, **fields)
