"""Free loopback ports for tests: several asked for at once are distinct."""

from __future__ import annotations

from tests.support.portico_up import UpPorts
from tests.support.ports import free_ports, port_is_free


def test_ports_chosen_together_are_distinct_and_free_once_returned() -> None:
    # Released one at a time, the kernel may hand the same port out twice in a row: CI once started
    # `portico up` with one port for both --vault-port and --signer-port.
    ports = free_ports(500)
    assert len(set(ports)) == len(ports)
    assert all(port_is_free(port) for port in ports[:20])


def test_every_portico_up_listener_gets_its_own_port() -> None:
    for _ in range(50):
        ports = UpPorts.choose().all()
        assert len(set(ports)) == len(ports) == 8
