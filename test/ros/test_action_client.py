"""Action clients created while their node is spun in another thread (as lifecycle configure does)."""

from __future__ import annotations

from fatigue_msgs.action import Advise
from lifecycle_msgs.msg import State
from std_msgs.msg import String

from fatigue_llm.intervention.node import InterventionNode
from fatigue_llm.ros.action import SpinSafeActionClient
from fatigue_llm.ros.runner import autostart

from .helpers import wait_for


def test_creating_clients_while_spinning_never_stops_the_executor(graph):
    # rclpy's own ActionClient fails this loop within a few iterations (AttributeError: _lock in the spinning
    # thread, which then stops); ours keeps one lock from before the executor can see the client
    node = graph.probe()
    for _ in range(300):
        client = SpinSafeActionClient(node, Advise, "advise")
        client.destroy()
    heard: list[str] = []
    node.create_subscription(String, "still_spinning", lambda msg: heard.append(msg.data), 10)
    publisher = node.create_publisher(String, "still_spinning", 10)
    assert wait_for(lambda: publisher.publish(String(data="yes")) or heard, timeout=5)


def test_the_intervention_node_configures_and_cleans_up_repeatedly_while_spun(graph):
    intervention = graph.add(InterventionNode, autostart=False, llm_enabled=True)
    for _ in range(30):  # each configure creates the advice client, each cleanup destroys it
        intervention.trigger_configure()
        assert intervention._state_machine.current_state[0] == State.PRIMARY_STATE_INACTIVE
        intervention.trigger_cleanup()
        assert intervention._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
    assert autostart(intervention)
    assert graph._thread.is_alive()
