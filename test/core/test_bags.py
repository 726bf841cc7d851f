"""Bag tools without rclpy: typestore, writer, reader, damaged bags and ``fatigue-llm bag info``."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fatigue_llm.bags import (
    DEFAULT_STORAGE,
    DISTROS,
    METADATA_VERSION,
    STORAGES,
    BagError,
    BagMessage,
    BagWriter,
    get_typestore,
    new_message,
    open_bag,
)
from fatigue_llm.bags.typestore import build_typestore, custom_message_types, msg_dir

STORE = get_typestore()
T = STORE.types
START_NS = 1_700_000_000 * 10**9


# -- message factories -----------------------------------------------------------------------------------
def _stamp(i: int) -> object:
    return T["builtin_interfaces/msg/Time"](sec=i, nanosec=500)


def _header(i: int, frame: str = "camera") -> object:
    return T["std_msgs/msg/Header"](stamp=_stamp(i), frame_id=frame)


def _features(i: int) -> object:
    cls = T["fatigue_msgs/msg/FatigueFeatures"]
    return new_message(cls.__msgtype__, header=_header(i, "base_link"), trigger=cls.TRIGGER_EVENT, microsleep_count=i,
                       slow_blink_count=2, microsleep=True, eye_closure_ratio=i / 10, blink_frequency=12.5)


def _observation(i: int) -> object:
    event = T["fatigue_msgs/msg/DriverEvent"]
    events = [event(type=event.MICROSLEEP, start=_stamp(i), duration=1.25, magnitude=0.0),
              event(type=event.NOD, start=_stamp(i + 1), duration=0.5, magnitude=0.3)]
    return new_message("fatigue_msgs/msg/DriverObservation", header=_header(i), face_found=True, ear=0.3,
                       eyes_closed=i % 2 == 0, events=events[: i % 3])


def _image(i: int, width: int = 64, height: int = 48) -> object:
    data = np.full(width * height * 3, i % 256, dtype=np.uint8)
    return T["sensor_msgs/msg/Image"](header=_header(i), height=height, width=width, encoding="rgb8",
                                      is_bigendian=0, step=width * 3, data=data)


def _string(i: int) -> object:
    return T["std_msgs/msg/String"](data=f"hello {i}")


TOPICS = {  # topic -> (type, factory, qos)
    "/fatigue/features": ("fatigue_msgs/msg/FatigueFeatures", _features, "reliable"),
    "/driver/observation": ("fatigue_msgs/msg/DriverObservation", _observation, "reliable"),
    "/camera/image": ("sensor_msgs/msg/Image", _image, "sensor_data"),
    "/chatter": ("std_msgs/msg/String", _string, "reliable"),
}


def _write_bag(path: Path, storage: str = DEFAULT_STORAGE, count: int = 5, distro: str = "kilted",
               start_ns: int = START_NS) -> Path:
    with BagWriter(path, storage=storage, distro=distro) as writer:
        for topic, (msgtype, _, qos) in TOPICS.items():
            writer.add_topic(topic, msgtype, qos)
        for i in range(count):
            for k, (topic, (_, make, _)) in enumerate(TOPICS.items()):
                writer.write(topic, start_ns + i * 100_000_000 + k, make(i))
    return path


def _metadata(bag: Path) -> dict:
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def _set_metadata(bag: Path, info: dict) -> None:
    (bag / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}))


# -- typestore -------------------------------------------------------------------------------------------
def test_typestore_has_every_repo_message_and_is_cached():
    names = {f"fatigue_msgs/msg/{p.stem}" for p in msg_dir().glob("*.msg")}
    assert names and names <= set(STORE.fielddefs)
    assert get_typestore("kilted") is STORE
    assert "fatigue_msgs/msg/DriverObservation" in get_typestore("humble").fielddefs
    with pytest.raises(ValueError, match="unknown ROS 2 distro"):
        get_typestore("melodic")


def test_core_does_not_import_rclpy():
    code = ("import sys, fatigue_llm.bags, fatigue_llm.bags.cli; "
            "sys.exit('rclpy' in sys.modules or 'fatigue_msgs' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_new_msg_file_is_picked_up(tmp_path):
    for path in msg_dir().glob("*.msg"):
        shutil.copy(path, tmp_path)
    (tmp_path / "FatigueProbe.msg").write_text("std_msgs/Header header\nfloat32 kss\nDriverEvent[] truth_events\n")
    types = custom_message_types(tmp_path)
    assert "fatigue_msgs/msg/FatigueProbe" in types
    store = build_typestore("kilted")  # a fresh store, not the shared cached one
    store.register(types)
    truth = store.types["fatigue_msgs/msg/FatigueProbe"]
    event = store.types["fatigue_msgs/msg/DriverEvent"](type=2, start=_stamp(1), duration=1.0, magnitude=0.0)
    msg = truth(header=_header(3), kss=7.5, truth_events=[event])
    back = store.deserialize_cdr(store.serialize_cdr(msg, truth.__msgtype__), truth.__msgtype__)
    assert back.kss == 7.5 and back.truth_events[0].type == 2


def test_new_message_fills_defaults():
    image = new_message("sensor_msgs/msg/Image", width=4)
    assert image.width == 4 and image.encoding == "" and image.data.dtype == np.uint8 and len(image.data) == 0
    pose = new_message("geometry_msgs/msg/PoseWithCovariance")
    assert pose.covariance.shape == (36,) and pose.pose.orientation.w == 0.0
    assert new_message("fatigue_msgs/msg/DriverObservation").events == []
    with pytest.raises(KeyError, match="my_pkg/msg/Nope"):
        new_message("my_pkg/msg/Nope")


def test_bad_msg_file_names_the_file(tmp_path):
    (tmp_path / "Broken.msg").write_text("float32[ x\n")
    with pytest.raises(BagError, match="Broken.msg"):
        custom_message_types(tmp_path)


# -- round trips -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip(tmp_path, storage):
    bag = _write_bag(tmp_path / "bag", storage, count=5)
    suffix = "mcap" if storage == "mcap" else "db3"
    assert sorted(p.name for p in bag.iterdir()) == sorted(["metadata.yaml", f"bag.{suffix}"])
    with open_bag(bag) as reader:
        assert reader.storage == storage
        assert reader.message_count == 20 and reader.error is None
        assert {name: (t.msgtype, t.count) for name, t in reader.topics.items()} == {
            topic: (msgtype, 5) for topic, (msgtype, _, _) in TOPICS.items()}
        assert reader.topics["/camera/image"].offered_qos[0].reliability.name == "BEST_EFFORT"
        assert reader.topics["/chatter"].offered_qos[0].reliability.name == "RELIABLE"
        assert reader.start_ns == START_NS and reader.end_ns == START_NS + 400_000_003
        assert reader.duration_ns == 400_000_003
        messages = list(reader.messages())
        assert [m.stamp_ns for m in messages] == sorted(m.stamp_ns for m in messages)
        by_topic = {topic: [m.decode() for m in messages if m.topic == topic] for topic in TOPICS}

    features = by_topic["/fatigue/features"][3]
    assert features.microsleep_count == 3 and features.eye_closure_ratio == pytest.approx(0.3)
    assert features.blink_frequency == 12.5 and features.yawn_count == 0
    assert features.header.stamp.sec == 3 and features.header.frame_id == "base_link" and features.microsleep
    observations = by_topic["/driver/observation"]
    assert [len(o.events) for o in observations] == [0, 1, 2, 0, 1]
    assert observations[2].events[1].type == T["fatigue_msgs/msg/DriverEvent"].NOD
    assert observations[2].events[1].magnitude == pytest.approx(0.3)
    assert observations[2].events[0].start.sec == 2
    image = by_topic["/camera/image"][4]
    assert (image.width, image.height, image.encoding) == (64, 48, "rgb8")
    assert image.data.shape == (64 * 48 * 3,) and int(image.data[0]) == 4
    assert [s.data for s in by_topic["/chatter"]] == [f"hello {i}" for i in range(5)]


@pytest.mark.parametrize("storage", STORAGES)
def test_messages_filters_topics_and_start(tmp_path, storage):
    bag = _write_bag(tmp_path / "bag", storage, count=5)
    with open_bag(bag) as reader:
        chatter = list(reader.messages(["chatter"], start_ns=START_NS + 200_000_000))  # slash optional
        with pytest.raises(BagError, match="no topic /nope"):
            list(reader.messages(["/nope"]))
    assert [m.decode().data for m in chatter] == ["hello 2", "hello 3", "hello 4"]
    assert {m.topic for m in chatter} == {"/chatter"}


def test_write_raw_and_message_equality(tmp_path):
    raw = bytes(STORE.serialize_cdr(_string(7), "std_msgs/msg/String"))
    with BagWriter(tmp_path / "raw", storage="sqlite3") as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
        writer.write_raw("/chatter", START_NS, raw)
    with open_bag(tmp_path / "raw") as reader:
        (message,) = list(reader.messages())
    assert message == BagMessage("/chatter", "std_msgs/msg/String", START_NS, raw)
    assert message.decode().data == "hello 7"
    assert BagMessage("/chatter", "std_msgs/msg/String", 0, raw).decode().data == "hello 7"  # default typestore


def test_writer_rejects_unknown_type_topic_and_storage(tmp_path):
    with pytest.raises(BagError, match="unknown storage"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    with pytest.raises(BagError, match="unknown message type my_pkg/msg/Nope"), BagWriter(tmp_path / "x") as writer:
        writer.add_topic("/a", "my_pkg/msg/Nope")
    assert not (tmp_path / "x").exists()
    with pytest.raises(BagError, match="was not added"), BagWriter(tmp_path / "y") as writer:
        writer.write("/a", 0, _string(0))


# -- metadata versions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
def test_humble_metadata_is_version_8_with_qos_as_yaml_string(tmp_path, storage):
    bag = _write_bag(tmp_path / "humble", storage, count=2, distro="humble")
    info = _metadata(bag)
    assert info["version"] == METADATA_VERSION["humble"] == 8
    qos_by_topic = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
                    for t in info["topics_with_message_count"]}
    for topic, text in qos_by_topic.items():
        assert isinstance(text, str), topic  # Humble's rosbag2 parses this field as a string only
        (profile,) = yaml.safe_load(text)
        assert profile["history"] == 1 and profile["durability"] == 2  # keep last, volatile: numeric enums
        assert profile["reliability"] == (2 if topic == "/camera/image" else 1)
        assert profile["deadline"] == {"sec": 0, "nsec": 0}  # "unspecified", which every distro reads
    with open_bag(bag, distro="humble") as reader:
        assert reader.message_count == 8


@pytest.mark.parametrize("distro", ["jazzy", "kilted"])
def test_jazzy_and_kilted_metadata_is_version_9_with_qos_list(tmp_path, distro):
    info = _metadata(_write_bag(tmp_path / distro, count=1, distro=distro))
    assert info["version"] == 9
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
           for t in info["topics_with_message_count"]}
    assert isinstance(qos["/chatter"], list)
    assert qos["/chatter"][0]["reliability"] == "reliable" and qos["/chatter"][0]["history"] == "keep_last"
    assert qos["/camera/image"][0]["reliability"] == "best_effort"
    assert set(DISTROS) >= {"humble", "jazzy", "kilted"}


# -- atomic writer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
def test_exception_inside_writer_leaves_no_bag(tmp_path, storage):
    with pytest.raises(RuntimeError, match="crash"), BagWriter(tmp_path / "bag", storage=storage) as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
        writer.write("/chatter", START_NS, _string(0))
        assert not (tmp_path / "bag").exists()  # being written elsewhere until it is complete
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []  # neither the bag nor its temporary folder


def test_writer_refuses_to_overwrite_unless_asked(tmp_path):
    bag = _write_bag(tmp_path / "bag", count=1)
    with pytest.raises(BagError, match="already exists"):
        BagWriter(bag)
    with BagWriter(bag, overwrite=True, storage="sqlite3") as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
        writer.write("/chatter", START_NS, _string(9))
    with open_bag(bag) as reader:
        assert reader.storage == "sqlite3" and reader.message_count == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


# -- real rosbag2 bags -----------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("form", ["folder", "file"])
def test_reads_real_rosbag2_talker(shared_dir, storage, form):
    bag = shared_dir / "data" / "rosbag2" / storage / "talker"
    if form == "file":
        bag = bag / ("talker.mcap" if storage == "mcap" else "talker.db3")
    with open_bag(bag) as reader:
        assert reader.storage == storage
        counts = {name: (t.msgtype, t.count) for name, t in reader.topics.items()}
        assert counts == {"/topic": ("std_msgs/msg/String", 10), "/rosout": ("rcl_interfaces/msg/Log", 10),
                          "/parameter_events": ("rcl_interfaces/msg/ParameterEvent", 0)}
        assert reader.message_count == 20
        assert reader.duration_ns == 4_531_096_768
        strings = [m.decode().data for m in reader.messages(["/topic"])]
        logs = [m.decode() for m in reader.messages(["/rosout"])]
        assert reader.error is None
    assert strings[0] == "Hello, world! 0" and len(strings) == 10
    assert len(logs) == 10 and logs[0].name  # decoded with the distro's Log, not the bag's stub definition


@pytest.mark.parametrize("storage", STORAGES)
def test_reads_real_rosbag2_convert_bag(shared_dir, storage):
    with open_bag(shared_dir / "data" / "rosbag2" / storage / "convert_a") as reader:
        assert {t.name: t.count for t in reader.topics.values()} == {"a_empty": 100, "b_basictypes": 50}
        assert reader.message_count == 150
        assert sum(1 for _ in reader.messages()) == 150
        assert "a_empty" in reader.unknown_types()  # test_msgs: in no distro store, no definition stored
        with pytest.raises(BagError, match="unknown message type test_msgs/msg/Empty"):
            next(iter(reader.messages(["a_empty"]))).decode()


# -- split bags, bare folders, several bags --------------------------------------------------------------
def _split_bag(tmp_path: Path, storage: str) -> Path:
    """What rosbag2 writes when a recording is split: one folder, two storage files, one metadata.yaml."""
    parts = [_write_bag(tmp_path / f"part{i}", storage, count=3, start_ns=START_NS + i * 10**9) for i in range(2)]
    bag = tmp_path / "split"
    bag.mkdir()
    infos = [_metadata(p) for p in parts]
    for part in parts:
        for file in part.iterdir():
            if file.name != "metadata.yaml":
                shutil.move(file, bag / file.name)
    merged = dict(infos[0])
    merged["relative_file_paths"] = [i["relative_file_paths"][0] for i in infos]
    merged["files"] = [i["files"][0] for i in infos]
    merged["message_count"] = sum(i["message_count"] for i in infos)
    merged["duration"] = {"nanoseconds": infos[1]["starting_time"]["nanoseconds_since_epoch"]
                          + infos[1]["duration"]["nanoseconds"] - START_NS}
    for topic, other in zip(merged["topics_with_message_count"], infos[1]["topics_with_message_count"], strict=True):
        topic["message_count"] += other["message_count"]
    _set_metadata(bag, merged)
    return bag


@pytest.mark.parametrize("storage", STORAGES)
def test_split_bag(tmp_path, storage):
    bag = _split_bag(tmp_path, storage)
    with open_bag(bag) as reader:
        assert len(reader.files) == 2 and reader.message_count == 24
        chatter = [m.decode().data for m in reader.messages(["/chatter"])]
        assert reader.start_ns == START_NS and reader.end_ns == START_NS + 10**9 + 200_000_003
    assert chatter == [f"hello {i}" for i in (0, 1, 2, 0, 1, 2)]


@pytest.mark.parametrize("storage", STORAGES)
def test_bare_folder_and_several_bags(tmp_path, storage):
    bag = _split_bag(tmp_path, storage)
    (bag / "metadata.yaml").unlink()  # only the storage files are left
    with open_bag(bag) as reader:
        assert reader.message_count == 24
        stamps = [m.stamp_ns for m in reader.messages()]
    assert stamps == sorted(stamps) and len(stamps) == 24
    one, two = sorted(p for p in bag.iterdir())
    with open_bag([two, one]) as reader:  # several files, merged by time
        assert [m.decode().data for m in reader.messages(["/chatter"])][:4] == ["hello 0", "hello 1", "hello 2",
                                                                               "hello 0"]


# -- db3 without definitions, legacy names, embedded-only types ------------------------------------------
def test_db3_without_type_definitions_and_legacy_names(tmp_path):
    bag = _write_bag(tmp_path / "bag", "sqlite3", count=2)
    with sqlite3.connect(bag / "bag.db3") as db:
        db.execute("DELETE FROM message_definitions")
        db.execute("UPDATE topics SET type = 'std_msgs/String', type_description_hash = '' WHERE name = '/chatter'")
    db.close()
    info = _metadata(bag)
    for topic in info["topics_with_message_count"]:
        if topic["topic_metadata"]["name"] == "/chatter":
            topic["topic_metadata"]["type"] = "std_msgs/String"
            topic["topic_metadata"]["type_description_hash"] = ""
    _set_metadata(bag, info)
    with open_bag(bag) as reader:
        assert reader.topics["/chatter"].msgtype == "std_msgs/msg/String"
        assert reader.unknown_types() == {}
        messages = list(reader.messages())
    chatter = [m for m in messages if m.topic == "/chatter"]
    assert chatter[1].msgtype == "std_msgs/msg/String" and chatter[1].decode().data == "hello 1"
    assert [len(m.decode().events) for m in messages if m.topic == "/driver/observation"] == [0, 1]


def _foreign_store():
    from rosbags.typesys import Stores, get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    store = rosbags_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("float64 level\nstring label\n", "my_pkg/msg/Thing"))
    return store


@pytest.mark.parametrize("storage", STORAGES)
def test_type_known_only_from_the_bag(tmp_path, storage):
    store = _foreign_store()
    with BagWriter(tmp_path / "bag", storage=storage, typestore=store) as writer:
        writer.add_topic("/thing", "my_pkg/msg/Thing")
        writer.write("/thing", START_NS, store.types["my_pkg/msg/Thing"](level=2.5, label="x"))
    with open_bag(tmp_path / "bag") as reader:  # the bag's own definition decodes it
        assert reader.unknown_types() == {}
        assert next(iter(reader.messages())).decode().label == "x"
    if storage == "sqlite3":  # without the stored definition the type is unknown: a clear error
        with sqlite3.connect(tmp_path / "bag" / "bag.db3") as db:
            db.execute("DELETE FROM message_definitions")
        db.close()
        with open_bag(tmp_path / "bag") as reader:
            assert reader.unknown_types() == {"/thing": "my_pkg/msg/Thing"}
            with pytest.raises(BagError, match=r"bag.*unknown message type my_pkg/msg/Thing on /thing"):
                next(iter(reader.messages())).decode()


# -- damaged and foreign bags ----------------------------------------------------------------------------
def _image_bag(path: Path, count: int = 12) -> Path:
    """~300 KB per image: several 1 MiB MCAP chunks."""
    with BagWriter(path) as writer:
        writer.add_topic("/camera/image", "sensor_msgs/msg/Image", "sensor_data")
        for i in range(count):
            writer.write("/camera/image", START_NS + i * 33_000_000, _image(i, 320, 320))
    return path


def test_truncated_mcap_is_read_up_to_the_damage(tmp_path):
    bag = _image_bag(tmp_path / "bag")
    mcap = bag / "bag.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.7)])  # footer, summary and part of the last chunks cut off
    with open_bag(bag) as reader:
        assert reader.error is not None and "bag.mcap" in str(reader.error)
        assert "bag.mcap" in reader.stopped_at
        readable = reader.topics["/camera/image"].count
        assert 0 < readable < 12 and reader.message_count == readable
        assert reader.end_ns == START_NS + (readable - 1) * 33_000_000  # what is readable, not what metadata says
        images = [m.decode() for m in reader.messages()]  # ends cleanly, no exception
        assert reader.error is not None and "bag.mcap" in reader.stopped_at
    assert len(images) == readable
    assert [int(img.data[0]) for img in images] == list(range(readable))


def test_truncated_bare_mcap_file(tmp_path):
    bag = _image_bag(tmp_path / "bag")
    mcap = bag / "bag.mcap"
    mcap.write_bytes(mcap.read_bytes()[:-500])
    with open_bag(mcap) as reader:
        assert reader.error is not None and reader.message_count > 0
        assert sum(1 for _ in reader.messages()) == reader.message_count


def test_truncated_db3_is_a_clear_error_or_partial(tmp_path):
    db_bag = _write_bag(tmp_path / "db", "sqlite3", count=40)
    db3 = db_bag / "db.db3"
    db3.write_bytes(db3.read_bytes()[: db3.stat().st_size // 2])
    try:
        with open_bag(db_bag) as reader:
            list(reader.messages())
            assert reader.error is not None and "db" in str(reader.error)
    except BagError as error:
        assert "db.db3" in str(error)


@pytest.mark.parametrize("storage", STORAGES)
def test_foreign_serialization_format_is_refused(tmp_path, storage):
    bag = _write_bag(tmp_path / "bag", storage, count=1)
    info = _metadata(bag)
    for topic in info["topics_with_message_count"]:
        topic["topic_metadata"]["serialization_format"] = "rmw_fake_format"
    _set_metadata(bag, info)
    with pytest.raises(BagError, match=r"(?i)bag.*serialization format .*rmw_fake_format.*only cdr"):
        open_bag(bag)


def test_foreign_serialization_format_in_a_bare_db3(tmp_path):
    bag = _write_bag(tmp_path / "bag", "sqlite3", count=1)
    with sqlite3.connect(bag / "bag.db3") as db:  # no metadata.yaml to say it: the storage file itself does
        db.execute("UPDATE topics SET serialization_format = 'rmw_fake_format' WHERE name = '/chatter'")
    db.close()
    with pytest.raises(BagError, match=r"bag\.db3: serialization format rmw_fake_format is not supported"):
        open_bag(bag / "bag.db3")


@pytest.mark.parametrize("content", ["{{{ not yaml", "just a string\n", "rosbag2_bagfile_information: {version: 9}\n"])
def test_corrupted_metadata_is_a_clear_error(tmp_path, content):
    bag = _write_bag(tmp_path / "bag", count=1)
    (bag / "metadata.yaml").write_text(content)
    with pytest.raises(BagError, match="bag: cannot open the bag"):
        open_bag(bag)


def test_missing_and_non_bag_paths(tmp_path):
    with pytest.raises(BagError, match="missing: does not exist"):
        open_bag(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml and no .mcap/.db3"):
        open_bag(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BagError, match="notes.txt: is not a bag"):
        open_bag(tmp_path / "notes.txt")
    (tmp_path / "zero.mcap").write_bytes(b"")
    with pytest.raises(BagError, match="zero.mcap"):
        open_bag(tmp_path / "zero.mcap")


def test_empty_bag(tmp_path):
    with BagWriter(tmp_path / "empty") as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
    with open_bag(tmp_path / "empty") as reader:
        assert reader.message_count == 0 and reader.duration_ns == 0 and reader.start_ns == 0
        assert list(reader.messages()) == []
        assert reader.topics["/chatter"].count == 0


# -- fatigue-llm bag info --------------------------------------------------------------------------------
def _info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "bag", "info", *args],
                          capture_output=True, text=True, timeout=60)


def test_info_output(tmp_path):
    bag = _write_bag(tmp_path / "drive", count=3)
    result = _info(str(bag))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Files:             drive.mcap"
    assert lines[1].startswith("Bag size:          ") and "KiB" in lines[1]
    assert "Storage id:        mcap" in lines
    assert "Duration:          0.200000003s" in lines
    assert "Start:             Nov 14 2023 22:13:20.000000000 (1700000000.000000000)" in lines
    assert "Messages:          12" in lines
    assert ("Topic information: Topic: /fatigue/features | Type: fatigue_msgs/msg/FatigueFeatures | Count: 3 | "
            "Serialization Format: cdr") in lines
    image_row = "Topic: /camera/image | Type: sensor_msgs/msg/Image | Count: 3 | Serialization Format: cdr"
    assert " " * 19 + image_row in lines
    assert result.stderr == ""


def test_info_real_bag(shared_dir):
    result = _info(str(shared_dir / "data" / "rosbag2" / "sqlite3" / "talker"))
    assert result.returncode == 0, result.stderr
    assert "Messages:          20" in result.stdout and "Duration:          4.531096768s" in result.stdout
    assert "Topic: /topic | Type: std_msgs/msg/String | Count: 10 | Serialization Format: cdr" in result.stdout


def _damage(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A damaged input for ``bag info`` and the file its error must name."""
    if kind == "missing":
        return tmp_path / "nothing_here", "nothing_here"
    if kind == "no_metadata_no_storage":
        (tmp_path / "folder").mkdir()
        return tmp_path / "folder", "folder"
    bag = _write_bag(tmp_path / "bag", count=2)
    if kind == "corrupt_metadata":
        (bag / "metadata.yaml").write_text(": : :\n  - [")
    elif kind == "foreign_format":
        info = _metadata(bag)
        info["topics_with_message_count"][0]["topic_metadata"]["serialization_format"] = "fake"
        _set_metadata(bag, info)
    elif kind == "zero_mcap":
        (bag / "bag.mcap").write_bytes(b"")
    elif kind == "missing_storage":
        (bag / "bag.mcap").unlink()
    return bag, "bag"


@pytest.mark.parametrize("kind", ["missing", "no_metadata_no_storage", "corrupt_metadata", "foreign_format",
                                  "zero_mcap", "missing_storage"])
def test_info_bad_input_exits_2_without_traceback(tmp_path, kind):
    path, name = _damage(tmp_path, kind)
    result = _info(str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and name in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_info_truncated_mcap_says_where(tmp_path):
    bag = _image_bag(tmp_path / "bag")
    mcap = bag / "bag.mcap"
    mcap.write_bytes(mcap.read_bytes()[:-3000])
    result = _info(str(bag))
    assert result.returncode == 1
    assert "Messages:" in result.stdout  # what is readable is still summarised
    assert result.stderr.startswith("error: ") and "bag.mcap" in result.stderr and "Traceback" not in result.stderr
    assert "damaged" in result.stderr


def test_info_verify_reads_every_message(tmp_path):
    bag = _write_bag(tmp_path / "bag", "sqlite3", count=3)
    with sqlite3.connect(bag / "bag.db3") as db:  # a message whose bytes do not hold a String
        db.execute("UPDATE messages SET data = x'00010000ffffff7f' WHERE id = (SELECT max(id) FROM messages)")
    db.close()
    assert _info(str(bag)).returncode == 0  # the index alone looks fine
    result = _info(str(bag), "--verify")
    assert result.returncode == 1 and "Messages:          12" in result.stdout
    assert result.stderr.startswith("error: ") and "cannot decode the std_msgs/msg/String on /chatter" in result.stderr
    assert str(bag) in result.stderr


def test_info_unknown_type_is_reported(tmp_path):
    store = _foreign_store()
    with BagWriter(tmp_path / "bag", storage="sqlite3", typestore=store) as writer:
        writer.add_topic("/thing", "my_pkg/msg/Thing")
        writer.write("/thing", START_NS, store.types["my_pkg/msg/Thing"](level=1.0, label="y"))
    with sqlite3.connect(tmp_path / "bag" / "bag.db3") as db:
        db.execute("DELETE FROM message_definitions")
    db.close()
    result = _info(str(tmp_path / "bag"))
    assert result.returncode == 1
    assert "Type: my_pkg/msg/Thing" in result.stdout
    assert "error: " in result.stderr and "unknown message type my_pkg/msg/Thing on /thing" in result.stderr


def test_bag_help_and_bad_rate(tmp_path):
    bag = _write_bag(tmp_path / "bag", count=1)
    result = subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "bag", "play", str(bag), "--rate", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: --rate") and "Traceback" not in result.stderr
