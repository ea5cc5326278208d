"""The ground floor: what every package may import, and which imports nothing above it.

- ``core.settings``: every setting, with its default and ``TAWAG_<NAME>`` override.
- The wire contracts, each record declared once with its codec: ``core.events`` (the
  event schema v1, the contract of the log), ``core.records`` (the CDR),
  ``core.agent_records`` (agent state changes, agent statistics, callback items);
  ``core.phone``, the one phone-number normaliser the records are written with.
"""
