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
// Straight to storage: the app issues a ticket and says how to upload (grant.method):
//   PUT        the file as the body of one request to grant.url (local files, GCS, Azure);
//   POST       a form to grant.url: grant.fields in order, then the file (S3; the store
//              enforces the size, type and key signed into the form's policy);
//   MULTIPART  parts of grant.part_size bytes PUT to URLs the app signs on demand, in
//              parallel, then completed by the app (S3, large files).
// Then the app redeems the ticket: it checks what arrived and adds the document.
async function api(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify(body),
  });
  if (!response.ok) { throw new Error(await response.text()); }
  return response.status === 204 ? null : response.json();
}

async function uploadParts(grant, file) {
  const numbers = Array.from({length: grant.part_count}, (_, i) => i + 1);
  for (let first = 0; first < numbers.length; first += 100) {  // URLs in batches
    const batch = numbers.slice(first, first + 100);
    const {urls} = await api("/api/uploads/parts", {ticket: grant.ticket, parts: batch});
    const queue = [...batch];
    const worker = async () => {  // four parts in flight at a time
      for (let n = queue.shift(); n !== undefined; n = queue.shift()) {
        const start = (n - 1) * grant.part_size;
        const part = file.slice(start, start + grant.part_size);
        const response = await fetch(urls[n], {method: "PUT", body: part});
        if (!response.ok) { throw new Error("storage refused part " + n + ": " + response.status); }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }
  await api("/api/uploads/multipart", {ticket: grant.ticket});
}

async function uploadDirectly(file, title, status) {
  status.textContent = "uploading...";
  const grant = await api("/api/uploads", {
    filename: file.name, size: file.size, content_type: file.type || null,
  });
  status.dataset.method = grant.method;
  if (grant.method === "MULTIPART") {
    try {
      await uploadParts(grant, file);
    } catch (error) {
      await api("/api/uploads/abort", {ticket: grant.ticket}).catch(() => {});
      throw error;
    }
  } else {
    let response;
    if (grant.method === "POST") {
      const form = new FormData();
      for (const [name, value] of Object.entries(grant.fields)) { form.append(name, value); }
      form.append("file", file);  // last: the store reads the fields before the file
      response = await fetch(grant.url, {method: "POST", body: form});
    } else {
      response = await fetch(grant.url, {method: "PUT", headers: grant.headers, body: file});
    }
    if (!response.ok) { throw new Error("storage refused the upload: " + response.status); }
  }
  return api("/api/uploads/complete", {ticket: grant.ticket, title});
}

document.getElementById("direct-upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const file = form.elements.file.files[0];
  const status = document.getElementById("direct-status");
  if (!file) { return; }
  try {
    await uploadDirectly(file, form.elements.title.value, status);
  } catch (error) {
    status.textContent = error.message;
    return;
  }
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
