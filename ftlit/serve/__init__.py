"""``ftlit serve``: a fine-tuned model behind an HTTP endpoint (FastAPI + uvicorn, extra ``serve``), with requests
from many clients batched together."""
