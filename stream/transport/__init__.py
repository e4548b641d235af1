"""Transport: masks leave the process over ZeroMQ (docs/design.md sections 5-6; schema v1 is a
contract).

Data path: ``stream.engine``'s results are published here, and read by subscribers in other
processes, directly or through the proxy.

* ``messages``: schema v1, ``[topic, header, payload]``, and the payload encodings.
* ``publish``: ``MaskPublisher`` (XPUB, never blocks, counts drops, stats once a second).
* ``frames``: the optional ``frame/<stream>`` topic's options and JPEG encoder.
* ``sockets``: socket setup: the default address, ``exposure_warning``, ``BindError`` and
  its kinds, ``open_xpub``; counted sends and XPUB event draining.
* ``subscribe``: ``MaskSubscriber`` and the ``python -m stream.subscribe`` CLI.
* ``proxy``: ``MaskProxy``, the XSUB/XPUB forwarder, and the ``python -m stream.proxy`` CLI.
* ``curve``, ``keys``: CurveZMQ on sockets; key files and ``python -m stream.keys``.

Nothing here imports torch except ``keys`` (through ``pcmanet.config``), which the subscriber
and the proxy import only when given key files.
"""
