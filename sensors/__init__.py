"""Sensors: the manifest store and the base images' per-platform digests drive invalidation."""

from sensors.base_digest_sensor import base_digest_sensor
from sensors.dead_letter_sensor import dead_letter_sensor
from sensors.executor_lost_sensor import executor_lost_sensor
from sensors.manifest_change_sensor import manifest_change_sensor
from sensors.queue_backlog_sensor import queue_backlog_sensor

__all__ = [
    "base_digest_sensor",
    "dead_letter_sensor",
    "executor_lost_sensor",
    "manifest_change_sensor",
    "queue_backlog_sensor",
]
