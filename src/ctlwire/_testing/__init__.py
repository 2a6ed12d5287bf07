"""The harness of ctlwire's tests, benchmarks and demo (private; not part of the API).

* :mod:`ctlwire._testing.proc`: child Python processes that import the same ctlwire,
  free loopback ports, children that report JSON lines;
* :mod:`ctlwire._testing.katcp_peer`: a KATCP peer server (aiokatcp's or ctlwire's) in
  its own process, for the client tests, benchmarks and demo.

Layering: may import any ctlwire family (and, lazily, test dependencies such as
aiokatcp); no library module of ctlwire imports it. Only tests, benchmarks and the
``ctlwire-demo`` command (``ctlwire.cli``) do.
"""
