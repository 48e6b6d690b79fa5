"""`tenfold serve`: a run behind a local web page and a JSON API (Starlette on uvicorn)."""
