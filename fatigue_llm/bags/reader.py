"""Read rosbag2 bags (MCAP or SQLite 3, any metadata version rosbags knows) without rclpy.

Accepts a bag folder with metadata.yaml (split bags included), a bare folder holding only storage files,
a single .mcap/.db3 file, or several of these (merged by time). A bag that is damaged part-way (an MCAP
whose footer was cut off, a corrupt chunk or page) is read up to its last good message; the reader then
records where it stopped in ``stopped_at`` / ``error`` instead of raising in the middle of an evaluation.
"""

from __future__ import annotations

import heapq
import struct
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import apsw

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd
from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinitionFormat, Qos
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import McapReader, Statistics
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.msg import normalize_msgtype
from rosbags.typesys.store import Typestore

from fatigue_llm.bags.errors import BagError
from fatigue_llm.bags.typestore import DEFAULT_DISTRO, check_distro, get_typestore

STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
# What damaged storage raises inside rosbags (short reads, bad lengths, corrupt pages, failed asserts)
_DAMAGE = (ReaderError, apsw.Error, struct.error, OSError, ValueError, TypeError, AssertionError, EOFError)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str  # normalised: 'pkg/msg/Type' even when the bag says 'pkg/Type'
    count: int
    serialization_format: str
    offered_qos: tuple[Qos, ...]


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    stamp_ns: int  # the bag's (receive) timestamp
    raw: bytes  # CDR as published
    typestore: Typestore | None = field(default=None, repr=False, compare=False)  # the bag's (cached) store
    source: Path | None = field(default=None, repr=False, compare=False)  # the bag it came from, for errors

    def decode(self) -> Any:
        """The message as a rosbags typestore object (raises BagError for an unknown type or bad bytes)."""
        store = self.typestore if self.typestore is not None else get_typestore(DEFAULT_DISTRO)
        where = self.source if self.source is not None else Path("<message>")
        if self.msgtype not in store.fielddefs:
            raise BagError(where, f"unknown message type {self.msgtype} on {self.topic}: not in the typestore "
                                  "and the bag carries no definition")
        try:
            return store.deserialize_cdr(self.raw, self.msgtype)
        except Exception as error:  # noqa: BLE001 - generated deserialisers raise many kinds
            raise BagError(where, f"cannot decode the {self.msgtype} on {self.topic} at {self.stamp_ns} ns: "
                                  f"{error}") from None


# -- rosbags storage plugins that survive a missing MCAP footer ------------------------------------------
class _TolerantMcapReader(McapReader):
    """rosbags' MCAP reader, falling back to a linear scan when the footer/summary is missing or broken.

    rosbags refuses such files at open; rosbag2 leaves them behind when the recorder is killed.
    """

    damage: str | None = None

    def _open(self) -> None:
        try:
            super()._open()
        except _DAMAGE as error:
            if not self.data_start:  # the header itself is bad: not an MCAP we can read at all
                raise
            self._open_unindexed(f"no valid footer/summary ({error})")

    def _open_unindexed(self, reason: str) -> None:
        assert self.bio is not None
        self.damage = reason
        self.data_end = self.bio.seek(0, 2)
        self.schemas.clear()
        self.channels.clear()
        self.connections.clear()
        self.chunks.clear()
        self.statistics = None
        try:
            self.meta_scan()
        except _DAMAGE as error:
            self.damage = f"{reason}; damaged record: {error}"
            self.statistics = self._count_readable()
        stats = self.statistics
        assert stats is not None
        self.connections = [x._replace(msgcount=stats.channel_message_counts.get(x.id, 0))
                            for x in self.connections]
        count = stats.message_count
        self.metadata = self.metadata._replace(
            duration=stats.end_time - stats.start_time + 1 if count else 0,
            start_time=stats.start_time if count else 2**63 - 1,
            end_time=stats.end_time + 1 if count else 0,
            message_count=count,
        )

    def _count_readable(self) -> Statistics:
        # meta_scan loses its counts when it raises: count what messages_scan can still yield
        counts: dict[int, int] = {}
        first, last = 2**63 - 1, 0
        try:
            for connection, stamp, _ in self.messages_scan(self.connections):
                counts[connection.id] = counts.get(connection.id, 0) + 1
                first, last = min(first, stamp), max(last, stamp)
        except _DAMAGE:
            pass
        return Statistics(sum(counts.values()), len(self.schemas), len(self.channels), 0, 0, 0, first, last, counts)


class _DirectoryReader(DirectoryReader):
    STORAGE_PLUGINS = {"mcap": _TolerantMcapReader, "sqlite3": Sqlite3Reader}

    def messages(self, connections: Collection[Connection], start: int | None = None,
                 stop: int | None = None) -> Iterator[tuple[Connection, int, bytes]]:
        """Like rosbags', but a storage connection matches by topic and type only: rosbag2 writes the
        QoS differently to metadata.yaml and to the db3 (infinite durations as 0 vs. INT_MAX), and rosbags
        matches them by equality, which finds no message at all in real bags."""
        wanted = {(c.topic, c.msgtype): c for c in connections}
        for storage in self.storages:
            self.current_path = storage.path  # which file a damaged record is in
            mapping = {x.id: wanted[(x.topic, x.msgtype)] for x in storage.connections
                       if (x.topic, x.msgtype) in wanted}
            selected = [x for x in storage.connections if x.id in mapping]
            if not selected:
                continue
            for connection, stamp, data in storage.messages(selected, start, stop):
                if self.metadata.compression_mode == "message":
                    data = zstd.decompress(data)
                yield mapping[connection.id], stamp, data


class _Reader(Reader):
    STORAGE_PLUGINS = {"dir": _DirectoryReader, ".mcap": _TolerantMcapReader, ".db3": Sqlite3Reader}


# -- helpers ---------------------------------------------------------------------------------------------
def _storage_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())


def _resolve(path: Path) -> list[Path]:
    """A user's path -> what rosbags opens: a folder with metadata.yaml, or storage files."""
    if not path.exists():
        raise BagError(path, "does not exist")
    if path.is_file():
        if path.name == "metadata.yaml":
            return [path.parent]
        if path.suffix not in STORAGE_SUFFIXES:
            raise BagError(path, "is not a bag (expected a bag folder, a .mcap or a .db3 file)")
        return [path]
    if (path / "metadata.yaml").is_file():
        return [path]
    files = _storage_files(path)
    if not files:
        raise BagError(path, "no metadata.yaml and no .mcap/.db3 file in this folder: not a bag")
    return files  # rosbag2 can read a bare storage file; so can we, one by one


def _storages(reader: Reader) -> list[Any]:
    """The storage plugin instances behind a rosbags Reader (one per file)."""
    storage = reader.storage
    return list(storage.storages) if isinstance(storage, DirectoryReader) else [storage]


def _definitions(connections: Sequence[Connection]) -> dict[str, tuple]:
    """Message definitions embedded in the bag (MCAP schemas, db3 message_definitions)."""
    types: dict[str, tuple] = {}
    for connection in connections:
        msgdef = connection.msgdef
        try:
            if msgdef.format == MessageDefinitionFormat.MSG and msgdef.data:
                types.update(get_types_from_msg(msgdef.data, normalize_msgtype(connection.msgtype)))
            elif msgdef.format == MessageDefinitionFormat.IDL and msgdef.data:
                for part in msgdef.data.split("=" * 80 + "\n"):
                    if part.strip():
                        types.update(get_types_from_idl(part.split("\n", 1)[1] if part.startswith("IDL: ")
                                                        else part))
        except Exception:  # noqa: BLE001 - an unparsable embedded definition: fall back to the distro's
            continue
    return types


def _same_fields(a: tuple, b: tuple) -> bool:
    return [(f[0].lower(), f[1]) for f in a[1]] == [(f[0].lower(), f[1]) for f in b[1]]


def _embedded_wins(base: Typestore, name: str, typ: tuple, digest: str, embedded: dict[str, tuple]) -> bool:
    """Whether a bag's own definition of ``name`` should replace the distro's."""
    if name not in base.fielddefs:
        return True  # the only definition there is
    if _same_fields(base.fielddefs[name], typ):
        return False
    if not digest:  # unverifiable; rosbag2's own test bags carry deliberately stub definitions
        return False
    trial = _rosbags_typestore(Stores.EMPTY)
    trial.register({**base.fielddefs, **{n: t[:2] for n, t in embedded.items()}})
    return trial.hash_rihs01(name) == digest  # recorded with another version of the message


def decoding_typestore(connections: Sequence[Connection], distro: str) -> Typestore:
    """The distro store with our messages; a bag's embedded definitions are added where the store lacks a
    type, and replace the store's only where they differ and the bag's type hash confirms them."""
    base = get_typestore(distro)
    embedded = _definitions(connections)
    digests = {normalize_msgtype(c.msgtype): c.digest for c in connections if c.digest}
    winners = {name: typ[:2] for name, typ in embedded.items()
               if _embedded_wins(base, name, typ, digests.get(name, ""), embedded)}
    if not winners:
        return base
    store = _rosbags_typestore(Stores.EMPTY)
    try:
        store.register({**base.fielddefs, **winners})
    except Exception:  # noqa: BLE001 - inconsistent embedded definitions: decode with what the distro knows
        return base
    return store


def _qos(connection: Connection) -> tuple[Qos, ...]:
    ext = connection.ext
    return tuple(ext.offered_qos_profiles) if isinstance(ext, ConnectionExtRosbag2) else ()


def _format(connection: Connection) -> str:
    ext = connection.ext
    return ext.serialization_format if isinstance(ext, ConnectionExtRosbag2) else "cdr"


# -- the reader ------------------------------------------------------------------------------------------
class BagReader:
    """An open bag (or several merged by time). Use as a context manager or call ``close()``."""

    def __init__(self, paths: Sequence[str | Path], *, distro: str = DEFAULT_DISTRO) -> None:
        if not paths:
            raise BagError("<none>", "no bag path given")
        self.paths = [Path(p) for p in paths]
        self.path = self.paths[0]
        try:
            self.distro = check_distro(distro)
        except ValueError as error:
            raise BagError(self.path, str(error)) from None
        self._readers: list[tuple[Path, Reader]] = []
        self.stopped_at: str | None = None
        self.error: BagError | None = None
        self._typestore: Typestore | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> BagReader:
        if self._readers:
            return self
        try:
            for path in self.paths:
                for source in _resolve(path):
                    self._readers.append((source, self._open_source(source)))
            self._check_formats()
        except BaseException:
            self.close()
            raise
        self._note_open_damage()
        return self

    def close(self) -> None:
        readers, self._readers = self._readers, []
        for _, reader in readers:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a damaged file
                pass

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @staticmethod
    def _open_source(source: Path) -> Reader:
        try:
            reader = _Reader(source)
            reader.open()
        except FileNotFoundError as error:
            raise BagError(source, f"missing file: {error}") from None
        except Exception as error:  # noqa: BLE001 - rosbags and sqlite raise many kinds on damaged bags
            hint = " (only cdr can be decoded or played)" if "Serialization format" in str(error) else ""
            raise BagError(source, f"cannot open the bag: {error}{hint}") from None
        return reader

    def _check_formats(self) -> None:
        for source, reader in self._readers:
            formats = {_format(c) for c in reader.connections} - {"cdr"}
            if formats:  # e.g. recorded with an rmw that does not serialise to CDR
                raise BagError(source, f"serialization format {', '.join(sorted(formats))} is not supported "
                                       "(only cdr can be decoded or played)")

    def _note_open_damage(self) -> None:
        for source, reader in self._readers:
            for storage in _storages(reader):
                if getattr(storage, "damage", None):
                    self._stop(source, storage.damage,
                               f"{storage.path} after {storage.metadata.message_count} readable message(s)")

    def _stop(self, source: Path, problem: str, where: str) -> None:
        if self.error is None:
            self.error = BagError(source, f"damaged bag, read up to {where}: {problem}")
            self.stopped_at = where

    def _require_open(self) -> list[tuple[Path, Reader]]:
        if not self._readers:
            raise BagError(self.path, "the bag reader is not open")
        return self._readers

    # -- summary ---------------------------------------------------------------------------------------
    @property
    def files(self) -> list[Path]:
        return [Path(s.path) for _, r in self._require_open() for s in _storages(r)]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.exists())

    @property
    def storage(self) -> str:
        storages = {"mcap" if isinstance(s, McapReader) else "sqlite3"
                    for _, r in self._require_open() for s in _storages(r)}
        return storages.pop() if len(storages) == 1 else "+".join(sorted(storages))

    @property
    def connections(self) -> list[Connection]:
        return [c for _, r in self._require_open() for c in self._counted_connections(r)]

    @staticmethod
    def _counted_connections(reader: Reader) -> list[Connection]:
        # a damaged file was counted by scanning; metadata.yaml still claims what was meant to be written
        storages = _storages(reader)
        if not any(getattr(s, "damage", None) for s in storages):
            return list(reader.connections)
        counts: dict[tuple[str, str], int] = {}
        for storage in storages:
            for c in storage.connections:
                counts[(c.topic, c.msgtype)] = counts.get((c.topic, c.msgtype), 0) + c.msgcount
        return [c._replace(msgcount=counts.get((c.topic, c.msgtype), 0)) for c in reader.connections]

    @property
    def topics(self) -> dict[str, TopicInfo]:
        topics: dict[str, TopicInfo] = {}
        for c in self.connections:
            have = topics.get(c.topic)
            count = c.msgcount + (have.count if have else 0)
            topics[c.topic] = TopicInfo(c.topic, normalize_msgtype(c.msgtype), count, _format(c),
                                        have.offered_qos if have else _qos(c))
        return topics

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())

    @staticmethod
    def _spans(reader: Reader) -> list[tuple[int, int]]:
        """(first, last) stamps of a reader's messages; per file when a file was damaged (the metadata.yaml
        describes what was meant to be written, not what can be read)."""
        storages = _storages(reader)
        if any(getattr(s, "damage", None) for s in storages):
            metadata = [s.metadata for s in storages]
        else:
            metadata = [reader.storage.metadata]
        # rosbags' end times are exclusive (last stamp + 1)
        return [(m.start_time, m.end_time - 1) for m in metadata if m.message_count]

    @property
    def start_ns(self) -> int:
        """Stamp of the first message (0 for an empty bag)."""
        return min((first for _, r in self._require_open() for first, _ in self._spans(r)), default=0)

    @property
    def end_ns(self) -> int:
        """Stamp of the last message (0 for an empty bag)."""
        return max((last for _, r in self._require_open() for _, last in self._spans(r)), default=0)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def typestore(self) -> Typestore:
        """The store that decodes this bag's messages (cached)."""
        if self._typestore is None:
            self._typestore = decoding_typestore(self.connections, self.distro)
        return self._typestore

    def unknown_types(self) -> dict[str, str]:
        """topic -> message type for topics that can be neither decoded nor played."""
        store = self.typestore
        return {t.name: t.msgtype for t in self.topics.values() if t.msgtype not in store.fielddefs}

    # -- messages --------------------------------------------------------------------------------------
    def messages(self, topics: Sequence[str] | None = None, start_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages in time order; stops cleanly at the first damaged record (see ``stopped_at``)."""
        wanted = self.select_topics(topics)
        store = self.typestore
        streams = [self._stream(source, reader, wanted, start_ns, store) for source, reader in self._require_open()]
        for _, message in heapq.merge(*streams, key=lambda item: item[0]):
            yield message

    def select_topics(self, topics: Sequence[str] | None) -> set[str] | None:
        """The bag's names for ``topics`` (with or without the leading slash); None = all."""
        if topics is None:
            return None
        known = self.topics
        chosen: set[str] = set()
        for name in topics:
            match = next((t for t in (name, "/" + name.lstrip("/"), name.lstrip("/")) if t in known), None)
            if match is None:
                raise BagError(self.path, f"no topic {name} in the bag (topics: {', '.join(sorted(known))})")
            chosen.add(match)
        return chosen

    def _stream(self, source: Path, reader: Reader, wanted: set[str] | None, start_ns: int | None,
                store: Typestore) -> Iterator[tuple[int, BagMessage]]:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        count, last = 0, None
        msgtypes = {c.id: normalize_msgtype(c.msgtype) for c in connections}  # once per topic, not per message
        try:
            for connection, stamp, raw in reader.messages(connections, start=start_ns):
                message = BagMessage(connection.topic, msgtypes[connection.id], stamp, bytes(raw), store, source)
                count, last = count + 1, stamp
                yield stamp, message
        except _DAMAGE as error:
            file = getattr(reader.storage, "current_path", source)
            where = f"{file} after {count} message(s)" + (f" (last at {last} ns)" if last is not None else "")
            if self.error is not None and self.error.path == source:  # the error met while reading is more precise
                self.error, self.stopped_at = None, None
            self._stop(source, str(error), where)


def open_bag(path_or_paths: str | Path | Sequence[str | Path], *, distro: str = DEFAULT_DISTRO) -> BagReader:
    """Open one bag (folder, bare folder, .mcap or .db3 file) or several merged by time; raises BagError."""
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    return BagReader(paths, distro=distro).open()
