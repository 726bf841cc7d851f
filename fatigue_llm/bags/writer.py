"""Write rosbag2 bags (MCAP or SQLite 3) that the target distro's ``ros2 bag`` can read.

The bag is written into a temporary sibling folder and renamed to its path only when it closes
successfully, so a crashed or interrupted writer never leaves a half bag where a reader looks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys.base import TypesysError
from rosbags.typesys.store import Typestore

from fatigue_llm.bags.errors import BagError
from fatigue_llm.bags.typestore import DEFAULT_DISTRO, check_distro, get_typestore

DEFAULT_STORAGE = "mcap"
STORAGES = ("mcap", "sqlite3")
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

# Metadata version each distro's rosbag2 reads: version 9 (Jazzy on) writes offered_qos_profiles as a
# YAML list with enum names, which Humble's parser rejects ("bad conversion"); version 8 keeps them as
# one YAML string with numeric enums, the form Humble and Iron expect.
METADATA_VERSION = {"humble": 8, "iron": 8, "jazzy": 9, "kilted": 9}

_UNSET = QosTime(0, 0)  # rmw "unspecified": the DDS default, valid in every distro (infinity differs)
QOS_PROFILES: dict[str, Qos] = {
    "reliable": Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                    _UNSET, _UNSET, QosLiveliness.AUTOMATIC, _UNSET, False),
    "sensor_data": Qos(QosHistory.KEEP_LAST, 5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
                       _UNSET, _UNSET, QosLiveliness.AUTOMATIC, _UNSET, False),
}


def qos_profiles(qos: str | Sequence[Qos]) -> list[Qos]:
    """'reliable' | 'sensor_data' | explicit rosbags Qos profiles -> the offered profiles to store."""
    if isinstance(qos, str):
        if qos not in QOS_PROFILES:
            raise ValueError(f"unknown QoS {qos!r} (expected one of {', '.join(QOS_PROFILES)})")
        return [QOS_PROFILES[qos]]
    return list(qos)


class BagWriter:
    """Context manager writing one bag: ``add_topic`` each topic, then ``write``/``write_raw`` messages."""

    def __init__(self, path: str | Path, *, storage: str = DEFAULT_STORAGE, distro: str = DEFAULT_DISTRO,
                 typestore: Typestore | None = None, overwrite: bool = False) -> None:
        self.path = Path(path)
        if storage not in _PLUGINS:
            raise BagError(self.path, f"unknown storage {storage!r} (expected one of {', '.join(STORAGES)})")
        try:
            check_distro(distro)
        except ValueError as error:
            raise BagError(self.path, str(error)) from None
        self.storage = storage
        self.distro = distro
        self.typestore = typestore if typestore is not None else get_typestore(distro)
        self.overwrite = overwrite
        self._refuse_existing()
        self._tmp_parent: Path | None = None
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> BagWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the folder inside keeps the bag's name, so its storage file is <name>/<name>.mcap after the rename
            self._tmp_parent = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial",
                                                     dir=self.path.parent))
            self._writer = Writer(self._tmp_parent / self.path.name, version=METADATA_VERSION[self.distro],
                                  storage_plugin=_PLUGINS[self.storage])
            self._writer.open()
        except (WriterError, OSError) as error:
            self._discard()
            raise BagError(self.path, f"cannot create the bag: {error}") from None
        return self

    def close(self) -> None:
        """Finish the bag (index, metadata.yaml) and move it to its path."""
        writer = self._require_open()
        try:
            writer.close()
            self._writer = None
            self._move_into_place()
        except (WriterError, OSError) as error:
            raise BagError(self.path, f"cannot finish the bag: {error}") from None
        finally:
            self._discard()

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at the path."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - the bag is thrown away anyway
                pass
        self._discard()

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- topics and messages ---------------------------------------------------------------------------
    def add_topic(self, topic: str, msgtype: str, qos: str | Sequence[Qos] = "reliable") -> None:
        """Declare a topic; ``msgtype`` ('pkg/msg/Type') must be in the typestore (its definition is stored)."""
        writer = self._require_open()
        if topic in self._connections:
            raise BagError(self.path, f"topic {topic} was already added")
        if msgtype not in self.typestore.fielddefs:
            raise BagError(self.path, f"unknown message type {msgtype} for {topic}: not in the {self.distro} "
                                      f"typestore (nor in fatigue_msgs)")
        try:
            profiles = qos_profiles(qos)
            self._connections[topic] = writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                             offered_qos_profiles=profiles)
        except (ValueError, WriterError, TypesysError) as error:
            raise BagError(self.path, f"cannot add topic {topic}: {error}") from None

    def write(self, topic: str, stamp_ns: int, message: object) -> None:
        """Serialise a typestore message object to CDR and write it."""
        connection = self._connection(topic)
        try:
            data = self.typestore.serialize_cdr(message, connection.msgtype)
        except Exception as error:  # noqa: BLE001 - the generated serialisers raise many kinds
            raise BagError(self.path, f"cannot serialise a {connection.msgtype} for {topic}: {error}") from None
        self._write(connection, stamp_ns, data)

    def write_raw(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """Write already serialised CDR bytes (as received from a raw subscription)."""
        self._write(self._connection(topic), stamp_ns, data)

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type of the topics added so far."""
        return {topic: connection.msgtype for topic, connection in self._connections.items()}

    # -- helpers ---------------------------------------------------------------------------------------
    def _write(self, connection: Connection, stamp_ns: int, data: bytes | memoryview) -> None:
        writer = self._require_open()
        if not 0 <= stamp_ns < 2**63:
            raise BagError(self.path, f"timestamp {stamp_ns} ns on {connection.topic} is out of range")
        writer.write(connection, int(stamp_ns), data)

    def _connection(self, topic: str) -> Connection:
        self._require_open()
        if topic not in self._connections:
            raise BagError(self.path, f"topic {topic} was not added (call add_topic first)")
        return self._connections[topic]

    def _require_open(self) -> Writer:
        if self._writer is None:
            raise BagError(self.path, "the bag writer is not open")
        return self._writer

    def _refuse_existing(self) -> None:
        if self.path.exists() and not self.overwrite:
            raise BagError(self.path, "already exists; not overwriting (pass overwrite=True)")

    def _move_into_place(self) -> None:
        assert self._tmp_parent is not None
        self._refuse_existing()  # something may have appeared while recording
        finished = self._tmp_parent / self.path.name
        if self.path.exists():  # overwrite: move the old bag aside first so the rename cannot collide
            old = self._tmp_parent / f"{self.path.name}.old"
            os.replace(self.path, old)
        os.replace(finished, self.path)

    def _discard(self) -> None:
        parent, self._tmp_parent = self._tmp_parent, None
        if parent is not None:
            shutil.rmtree(parent, ignore_errors=True)
