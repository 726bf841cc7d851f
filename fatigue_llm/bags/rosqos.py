"""QoS between rclpy and bag metadata (rosbags ``Qos``). Imports rclpy: only record/play use it."""

from __future__ import annotations

from collections.abc import Sequence

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

INFINITE_NS = 2**63 - 1
MIN_DEPTH = 10


def _time(duration: Duration) -> QosTime:
    nanoseconds = duration.nanoseconds
    # "infinite" is spelt differently in every distro's metadata; "unspecified" (0) means the same default
    if nanoseconds <= 0 or nanoseconds >= INFINITE_NS or nanoseconds >= 2**31 * 10**9:
        return QosTime(0, 0)
    return QosTime(*divmod(nanoseconds, 1_000_000_000))


def _enum(kind: type, value: int, unknown: object) -> object:
    try:
        return kind(int(value))
    except ValueError:
        return unknown


def bag_qos(profile: QoSProfile) -> Qos:
    """A publisher's offered QoS as rosbags stores it in the bag."""
    return Qos(
        _enum(QosHistory, profile.history, QosHistory.UNKNOWN),
        int(profile.depth),
        _enum(QosReliability, profile.reliability, QosReliability.UNKNOWN),
        _enum(QosDurability, profile.durability, QosDurability.UNKNOWN),
        _time(profile.deadline),
        _time(profile.lifespan),
        _enum(QosLiveliness, profile.liveliness, QosLiveliness.UNKNOWN),
        _time(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions),
    )


def compatible_profile(reliabilities: Sequence[object], durabilities: Sequence[object], depth: int) -> QoSProfile:
    """One profile that matches every offer: best effort if any is best effort (it hears reliable ones
    too), transient local only if all are (so latched messages arrive and volatile ones still match)."""
    best_effort = any(r in (ReliabilityPolicy.BEST_EFFORT, QosReliability.BEST_EFFORT) for r in reliabilities)
    latched = bool(durabilities) and all(
        d in (DurabilityPolicy.TRANSIENT_LOCAL, QosDurability.TRANSIENT_LOCAL) for d in durabilities)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(depth, MIN_DEPTH),
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        liveliness=LivelinessPolicy.AUTOMATIC,
    )


def playback_profile(offered: Sequence[Qos]) -> QoSProfile:
    """What to publish a bag topic with: what its recorded publishers offered (reliable if unknown)."""
    depth = max((q.depth for q in offered if q.history == QosHistory.KEEP_LAST), default=MIN_DEPTH)
    return compatible_profile([q.reliability for q in offered], [q.durability for q in offered], depth)
