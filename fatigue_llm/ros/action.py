"""An rclpy ActionClient that can be created and destroyed while its node is spun in another thread.

Two races in rclpy (Kilted) end an executor's spin loop, and with it every callback of the node, when a
client comes or goes from a thread other than the spinning one (a MultiThreadedExecutor, or a lifecycle
transition triggered from outside the executor, as tests and managers do):

- Creation (ros2/rclpy#1589): the client joins the node's waitables before it creates the lock that
  ``get_num_entities`` takes, and ``add_waitable`` wakes the executor on purpose: ``AttributeError: _lock``.
- Destruction: an executor that listed the client just before ``destroy()`` skips it when counting the
  wait set (its handle is invalid) but still adds it and asks whether it is ready: ``RCLError: action client
  pointer is invalid``.
"""
from __future__ import annotations

import threading

from rclpy.action import ActionClient
from rclpy.exceptions import InvalidHandle


class SpinSafeActionClient(ActionClient):
    def __init__(self, *args, **kwargs) -> None:
        self._lock = threading.Lock()  # before the base class makes the client visible to executors
        super().__init__(*args, **kwargs)

    # one lock for the client's whole life: the base class assigns its own at the end of __init__, when an
    # executor may already hold the first one
    @property
    def _lock(self) -> threading.Lock:
        return self.__dict__["_spin_safe_lock"]

    @_lock.setter
    def _lock(self, lock: threading.Lock) -> None:
        self.__dict__.setdefault("_spin_safe_lock", lock)

    # An executor enters each client before counting it. If that failed, the handle is gone for good and the
    # client was left out of the count, yet the executor still adds it and asks whether it is ready: both
    # must then be no-ops. A handle that was entered is never freed under the executor.
    def add_to_wait_set(self, wait_set) -> None:
        try:
            with self._client_handle:
                super().add_to_wait_set(wait_set)
        except InvalidHandle:
            pass

    def is_ready(self, wait_set) -> bool:
        try:
            with self._client_handle:
                return super().is_ready(wait_set)
        except InvalidHandle:
            return False
