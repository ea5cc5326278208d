"""``python -m streams``: run the stream processors' worker with the stack's settings."""

from streams.app import run_worker
from tawag.settings import load

if __name__ == "__main__":
    run_worker(load())
