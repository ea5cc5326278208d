"""``python -m streams``: run the stream processors' worker with the stack's settings."""

from core.settings import load
from streams.app import run_worker

if __name__ == "__main__":
    run_worker(load())
