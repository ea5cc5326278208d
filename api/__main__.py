"""``python -m api``: run the API process; ``python -m api openapi``: print its document."""

import json
import sys
from pathlib import Path

from api.app import create_app
from api.keys import KeyStore
from api.service import run
from core.settings import load


def openapi_document() -> str:
    """The OpenAPI document, as checked in at api/openapi.json (stable bytes)."""
    app = create_app(load(environ={}), client=None, keys=KeyStore(Path("/nonexistent")))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["openapi"]:
        sys.stdout.write(openapi_document())
    else:
        import logging
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        run(load())
