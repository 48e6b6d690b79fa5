"""The web app of `tenfold serve` (Starlette): the page, the JSON API and its errors.

    GET  /          the page: choose or drop an image, see it beside its top-3 classes (no internet needed)
    POST /predict   an image, as the whole body (any Content-Type but multipart) or as the one file of a
                    multipart/form-data body -> {"predictions": [{"class": ..., "probability": ...}, ...]}
                    (?top=N for other than 3)
    GET  /health    {"status": "ok", "run": ..., "model": ..., "classes": [...], "image_size": [H, W], ...}

Every error is a 4xx (or 500) with one line of JSON, {"error": "..."}; the server keeps serving.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from tenfold.data.decode import Skip, decode
from tenfold.errors import TenfoldError
from tenfold.log import warn
from tenfold.training.infer import Trained, predict_images

MAX_UPLOAD = 10 * 2**20   # bytes: the largest image (or form) /predict accepts
DRAIN = 8 * MAX_UPLOAD    # bytes: an oversized body is read (and dropped) this far, so the client reads the 413


@dataclass
class Predictor:
    """A loaded run answering one image at a time (decoding runs in parallel; the model, one request at a time)."""
    trained: Trained
    tta: int | None = None          # test-time views; None: the run's own (as `tenfold predict`)
    name: str = ""                  # the run, as the page names it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, data: bytes, top: int) -> list[dict]:
        image = decode(data, self.trained.shape, fit=self.trained.fit)
        if isinstance(image, Skip):
            raise HTTPException(400, f"not a usable image: {image}")
        with self.lock:
            [best] = predict_images(self.trained, [image], top, self.tta)
        return [{"class": c, "probability": p} for c, p in best]

    def describe(self) -> dict:
        t = self.trained
        return {"status": "ok", "run": self.name, "model": t.ckpt["config"].get("model"), "classes": t.classes,
                "image_size": list(t.shape), "tta": t.views(self.tta), "max_upload_bytes": MAX_UPLOAD}


def make_app(predictor: Predictor) -> Starlette:
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(resources.files("tenfold.serve").joinpath("page.html").read_text())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(predictor.describe())

    async def predict(request: Request) -> JSONResponse:
        top = top_k(request, len(predictor.trained.classes))
        data = await image_bytes(request)
        return JSONResponse({"predictions": await run_in_threadpool(predictor, data, top)})

    routes = [Route("/", page), Route("/health", health), Route("/predict", predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})


def top_k(request: Request, classes: int) -> int:
    raw = request.query_params.get("top", "3")
    if not raw.isdigit() or int(raw) < 1:
        raise HTTPException(400, f"top must be a whole number of at least 1, got {raw[:20]!r}")
    return min(int(raw), classes)


async def image_bytes(request: Request) -> bytes:
    """The image of a /predict request: the body, or the file of a multipart form; 4xx for anything else."""
    body = await read_limited(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = await form_file(request, body)
    if not body:
        raise HTTPException(400, "no image: send the image file as the body, or as a multipart form's file")
    return body


async def read_limited(request: Request) -> bytes:
    """The body, at most MAX_UPLOAD bytes; 413 beyond (after draining up to DRAIN, so the client hears it)."""
    declared = request.headers.get("content-length", "")
    body, seen = bytearray(), 0
    if not (declared.isdigit() and int(declared) > DRAIN):
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= MAX_UPLOAD:
                body += chunk
            elif seen > DRAIN:
                break
    if seen > MAX_UPLOAD or (declared.isdigit() and int(declared) > MAX_UPLOAD):
        raise HTTPException(413, f"the upload is over the limit of {MAX_UPLOAD // 2**20} MiB; send a smaller image")
    return bytes(body)


async def form_file(request: Request, body: bytes) -> bytes:
    """The one file of a multipart/form-data body already read."""
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=20, max_part_size=MAX_UPLOAD)
    except HTTPException as e:
        raise HTTPException(400, f"unreadable form: {e.detail}") from e
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise HTTPException(400, "the form has no file: send the image as a file field (curl -F file=@cat.jpg)")
    return await files[0].read()


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (404, 405 with its Allow header) and ours, as one line of JSON."""
    message = exc.detail
    if exc.status_code == 404:
        message = f"no such page: {request.url.path} (there are GET /, GET /health and POST /predict)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; use {(exc.headers or {}).get('Allow')}"
    return JSONResponse({"error": str(message).splitlines()[0]}, status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    """A failure of the model itself (a TenfoldError says what), not of the request: 500, still one line."""
    message = str(exc) if isinstance(exc, TenfoldError) else f"the server failed on this request ({exc!r:.120})"
    warn(f"{request.method} {request.url.path}: {message.splitlines()[0]}")  # one line on the server's console
    return JSONResponse({"error": message.splitlines()[0]}, status_code=500)
