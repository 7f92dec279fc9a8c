import csv
import hashlib

from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_safe

from .forms import MessageForm, UploadForm

#: Rows of the CSV report generated per chunk of the response (about 100 KB).
ROWS_PER_CHUNK = 1000
#: The largest report asked for (about 100 GB).
MAX_ROWS = 1_000_000_000
NOTE = "generated lazily, one chunk at a time, as the client reads"


def interface(request):
    """Which protocol this request came in by."""
    return "ASGI" if isinstance(request, ASGIRequest) else "WSGI"


@require_safe
def home(request):
    return render(request, "pages/home.html", {"interface": interface(request)})


@require_http_methods(["GET", "POST"])
def message_form(request):
    posted = None
    if request.method == "POST":
        form = MessageForm(request.POST)
        if form.is_valid():
            posted = form.cleaned_data
            form = MessageForm()
    else:
        form = MessageForm()
    return render(request, "pages/form.html", {"form": form, "posted": posted})


@require_http_methods(["GET", "POST"])
def upload(request):
    """Django's upload handlers write a file larger than
    FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file as it arrives; the view
    reads it back in chunks for its checksum."""
    result = None
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            f = form.cleaned_data["file"]
            digest = hashlib.sha256()
            for chunk in f.chunks():
                digest.update(chunk)
            result = {
                "name": f.name,
                "size": f.size,
                "sha256": digest.hexdigest(),
                "stored": "a temporary file" if isinstance(f, TemporaryUploadedFile) else "memory",
            }
            form = UploadForm()
    else:
        form = UploadForm()
    return render(request, "pages/upload.html", {"form": form, "result": result})


class Echo:
    """A file-like object that hands back what `csv.writer` writes to it."""

    def write(self, value):
        return value


def csv_chunks(rows):
    writer = csv.writer(Echo())
    yield writer.writerow(["id", "name", "square", "note"])
    for start in range(0, rows, ROWS_PER_CHUNK):
        end = min(start + ROWS_PER_CHUNK, rows)
        yield "".join(writer.writerow([i, f"item {i}", i * i, NOTE]) for i in range(start, end))


async def async_chunks(chunks):
    for chunk in chunks:
        yield chunk


@require_safe
def report_csv(request):
    """A CSV of `?rows=N` rows, generated as it is sent: the worker holds one
    chunk at a time however large the report."""
    try:
        rows = int(request.GET.get("rows", "1000"))
    except ValueError:
        return HttpResponseBadRequest("rows must be a whole number")
    if not 0 <= rows <= MAX_ROWS:
        return HttpResponseBadRequest(f"rows must be from 0 to {MAX_ROWS}")
    chunks = csv_chunks(rows)
    # Under ASGI Django must be given an asynchronous iterator, and under WSGI
    # a synchronous one: given the other kind, it reads the whole report into
    # memory before sending any of it.
    if isinstance(request, ASGIRequest):
        chunks = async_chunks(chunks)
    return StreamingHttpResponse(
        chunks,
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="report.csv"'},
    )


def echo(request):
    """Echoes the cookies and X- headers received (repeated headers arrive
    joined by commas), and sets two cookies."""
    response = JsonResponse(
        {
            "method": request.method,
            "cookies": request.COOKIES,
            "headers": {
                name: value
                for name, value in request.headers.items()
                if name.lower().startswith("x-")
            },
        }
    )
    response.set_cookie("flavour", "oatmeal")
    response.set_cookie("note", "hello world", max_age=3600, httponly=True, samesite="Lax")
    return response


def boom(request):
    """Always fails: Django answers with the 500 page and logs the traceback."""
    raise RuntimeError("boom: this view always fails")
