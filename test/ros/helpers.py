"""Shared helpers for tests that run real rclpy nodes in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter


class Graph:
    """Nodes spinning in a background executor of their own context."""

    def __init__(self, executor_class=SingleThreadedExecutor, **executor_options) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        # single-threaded as the nodes spin when deployed; the llm node spins a MultiThreadedExecutor
        self.executor = executor_class(context=self.context, **executor_options)
        self.nodes: list[Node] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok() and not self._stopping.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if not self.context.ok():
                    return
                raise

    def add(self, make: Callable[..., Node], **parameters) -> Node:
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        node = make(context=self.context, parameter_overrides=overrides)
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def probe(self, name: str = "probe") -> Node:
        node = rclpy.create_node(name, context=self.context)
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=10.0)  # waits for callbacks still running
        for node in self.nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def wait_for_subscribers(publisher, count: int = 1, timeout: float = 5.0) -> None:
    assert wait_for(lambda: publisher.get_subscription_count() >= count, timeout), "no subscriber matched"
