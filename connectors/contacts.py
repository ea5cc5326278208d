"""``tawag.crm-contacts``: each contact lookup, published for routing.

Compacted, key ``tenant:phone:crm``; routing reads the client's responsible manager and
the extension mapped to them (:mod:`tawag.kafka` creates the topic).

    publish = ContactPublisher(producer, tenant="acme", topic="tawag.crm-contacts")
    publish("amocrm", "+79161234567", contact, "101")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from connectors.base import Contact

__all__ = ["ContactPublisher", "contact_record"]


def contact_record(tenant: str, crm: str, phone: str, contact: Contact | None,
                   extension: str | None, ts: float) -> tuple[bytes, bytes]:
    """Key and JSON value of one ``tawag.crm-contacts`` record (key ``tenant:phone:crm``)."""
    value = {"tenant": tenant, "crm": crm, "phone": phone,
             "contact_id": contact.id if contact else None,
             "name": contact.name if contact else None,
             "entity_type": contact.entity_type if contact else None,
             "responsible_user_id": contact.responsible_user_id if contact else None,
             "extension": extension, "ts": round(ts, 3)}
    return (f"{tenant}:{phone}:{crm}".encode(),
            json.dumps(value, ensure_ascii=False, sort_keys=True).encode())


class ContactPublisher:
    """Sends one record per lookup through a Kafka producer (``send(topic, key, value)``)."""

    def __init__(self, producer: Any, *, tenant: str, topic: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.producer = producer
        self.tenant = tenant
        self.topic = topic
        self.clock = clock

    def __call__(self, crm: str, phone: str, contact: Contact | None,
                 extension: str | None) -> None:
        key, value = contact_record(self.tenant, crm, phone, contact, extension, self.clock())
        self.producer.send(self.topic, key=key, value=value)
