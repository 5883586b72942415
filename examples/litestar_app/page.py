"""The library's single HTML page, rendered on the server (no template engine needed)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .models import DOCUMENT_TYPES, IMAGE_TYPES, MAX_UPLOAD_SIZE, Document

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d2330; }
h1 { margin-bottom: .2rem; } .sub { color: #5b6475; margin-top: 0; }
form.upload { display: flex; gap: .6rem; flex-wrap: wrap; align-items: center; padding: 1rem;
              background: #f3f5f9; border-radius: .5rem; margin: .6rem 0; }
.error { background: #fde8e8; color: #8a1c1c; padding: .6rem 1rem; border-radius: .5rem; }
ul.documents { list-style: none; padding: 0; }
li.document { display: flex; gap: 1rem; align-items: center; padding: .6rem 0;
              border-bottom: 1px solid #e3e6ec; }
.thumb { width: 64px; height: 64px; object-fit: cover; border-radius: .3rem;
         background: #e3e6ec; display: flex; align-items: center; justify-content: center;
         font-size: .75rem; color: #5b6475; }
.meta { flex: 1; } .meta small { color: #5b6475; }
.actions { display: flex; gap: .6rem; align-items: center; }
.actions form { margin: 0; }
"""

DIRECT_UPLOAD_JS = """
document.getElementById("direct-upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const file = form.elements.file.files[0];
  const status = document.getElementById("direct-status");
  if (!file) { return; }
  status.textContent = "uploading...";
  const grant = await fetch("/api/uploads", {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({filename: file.name, size: file.size,
                          content_type: file.type || "application/octet-stream"}),
  });
  if (!grant.ok) { status.textContent = await grant.text(); return; }
  const {url, method, headers, ticket} = await grant.json();
  const put = await fetch(url, {method, headers, body: file});
  if (!put.ok) { status.textContent = "storage refused the upload: " + put.status; return; }
  const done = await fetch("/api/uploads/complete", {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({ticket, title: form.elements.title.value}),
  });
  if (!done.ok) { status.textContent = await done.text(); return; }
  window.location.reload();
});
"""


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _item(doc: Document) -> str:
    stored = doc.attachment
    if doc.thumbnail is not None:
        thumb = f'<img class="thumb" src="/documents/{doc.id}/thumbnail" alt="thumbnail">'
    else:
        label = escape((stored.content_type or "file").split("/")[-1][:8])
        thumb = f'<div class="thumb">{label}</div>'
    return f"""
<li class="document" data-id="{doc.id}">
  {thumb}
  <div class="meta">
    <strong class="title">{escape(doc.title)}</strong><br>
    <small><span class="filename">{escape(stored.filename)}</span>
      &middot; {escape(stored.content_type or "")} &middot; {_size(stored.size)}</small>
  </div>
  <div class="actions">
    <a class="download" href="/documents/{doc.id}/download">Download</a>
    <a class="signed" href="/documents/{doc.id}/signed">Signed link</a>
    <form method="post" action="/documents/{doc.id}/delete">
      <button class="delete" type="submit">Delete</button>
    </form>
  </div>
</li>"""


def render_page(
    documents: Sequence[Document],
    *,
    storage: str,
    error: str | None = None,
    direct_uploads: bool = False,
) -> str:
    """The whole page: upload form(s), an error if the last upload was refused, the list."""
    accept = ",".join((*DOCUMENT_TYPES, *IMAGE_TYPES))
    items = "".join(_item(doc) for doc in documents)
    listing = (
        f'<ul class="documents">{items}</ul>'
        if documents
        else '<p class="empty">No documents yet: upload one.</p>'
    )
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    direct = ""
    if direct_uploads:
        direct = f"""
<form id="direct-upload" class="upload">
  <strong>Documents straight to storage:</strong>
  <input type="text" name="title" placeholder="Title (optional)">
  <input type="file" name="file" accept="{escape(",".join(DOCUMENT_TYPES))}" required>
  <button type="submit">Upload directly</button> <span id="direct-status"></span>
</form>
<script>{DIRECT_UPLOAD_JS}</script>"""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Document library</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style>
</head>
<body>
<h1>Document library</h1>
<p class="sub">sqlalchemy-obstore example &middot; files go to {escape(storage)}
  &middot; up to {MAX_UPLOAD_SIZE // (1024 * 1024)} MiB: PDF, text, Office, images</p>
{problem}
<form id="upload" class="upload" method="post" action="/documents" enctype="multipart/form-data">
  <input type="text" name="title" placeholder="Title (optional)">
  <input type="file" name="file" accept="{escape(accept)}" required>
  <button type="submit">Upload</button>
</form>{direct}
{listing}
</body>
</html>
"""
