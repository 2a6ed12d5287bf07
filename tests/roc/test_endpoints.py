"""Endpoints and the broker address forms users pass around."""
from __future__ import annotations

import pytest

from ctlwire.roc import Endpoints
from ctlwire.roc.endpoints import default_endpoints, parse_broker_spec, resolve


def test_port_offsets_broker_xsub_xpub():
    ep = Endpoints("127.0.0.1", 6000)
    assert (ep.rocBroker, ep.generalXSUB, ep.generalXPUB) == (
        "tcp://127.0.0.1:6000", "tcp://127.0.0.1:6001", "tcp://127.0.0.1:6002")


def test_default_base_port_is_5555():
    assert Endpoints("h").rocBroker == "tcp://h:5555"


def test_ipv6_hosts_are_bracketed():
    assert Endpoints("::1", 7000).generalXPUB == "tcp://[::1]:7002"


@pytest.mark.parametrize("spec,host,port", [
    ("obs-pc", "obs-pc", 5555), ("obs-pc:6000", "obs-pc", 6000),
    ("[::1]:6100", "::1", 6100), ("::1", "::1", 5555)])
def test_host_and_host_port_forms(spec, host, port):
    ep = parse_broker_spec(spec)
    assert (ep.brokerAddress, ep.brokerBasePort) == (host, port)


def test_bad_port_is_a_clear_error():
    with pytest.raises(ValueError, match="'x5' .* is not a number"):
        parse_broker_spec("host:x5")


def test_environment_variable_names_the_broker(monkeypatch):
    monkeypatch.setenv("CTLWIRE_ROC_BROKER", "10.0.0.9:7000")
    assert default_endpoints() == Endpoints("10.0.0.9", 7000)


def test_without_environment_localhost_5555(monkeypatch):
    monkeypatch.delenv("CTLWIRE_ROC_BROKER", raising=False)
    assert resolve(None) == "tcp://localhost:5555"


def test_full_endpoint_strings_are_used_as_given():
    assert resolve("tcp://127.0.0.1:9", "generalXPUB") == "tcp://127.0.0.1:9"


def test_a_list_of_brokers_from_the_environment(monkeypatch):
    from ctlwire.roc.endpoints import default_endpoint_list, resolve_all
    monkeypatch.setenv("CTLWIRE_ROC_BROKER", "10.0.0.1:6000, 10.0.0.2:7000")
    assert default_endpoint_list() == [Endpoints("10.0.0.1", 6000),
                                       Endpoints("10.0.0.2", 7000)]
    assert resolve_all(None) == ["tcp://10.0.0.1:6000", "tcp://10.0.0.2:7000"]
    assert resolve_all(None, "generalXPUB") == ["tcp://10.0.0.1:6002",
                                                "tcp://10.0.0.2:7002"]
    assert resolve_all([Endpoints("h", 100), "tcp://x:1"]) == ["tcp://h:100", "tcp://x:1"]
    assert resolve_all("a:100,b:200") == ["tcp://a:100", "tcp://b:200"]


def test_a_bad_broker_list_names_the_variable_and_the_entry(monkeypatch):
    from ctlwire.roc.endpoints import default_endpoint_list
    monkeypatch.setenv("CTLWIRE_ROC_BROKER", "foo:5555,foo:bar")
    with pytest.raises(ValueError, match=r"\$CTLWIRE_ROC_BROKER.*'bar'"):
        default_endpoint_list()
