"""The SIP edge's Python, beside its Kamailio config (``sip-edge/``).

- ``edge.control``: start and ask Kamailio and rtpengine (commands, readiness, JSON-RPC).
- ``edge.rtpengine``: rtpengine's ng and CLI control protocols.
- ``edge.provision``: the provisioning file -> Kamailio's htables (and its topic).
- ``edge.sipp``: sipp scenarios run against the edge (demo traffic, tests, benchmarks).
"""
