"""``python -m warehouse``: run the warehouse process (see :mod:`warehouse.service`)."""

from warehouse.service import main

main()
