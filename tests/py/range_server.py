"""A local HTTP file server on 127.0.0.1 for the `ds4 pull` tests: serves
in-memory files with Range support, and can be told to cut a transfer part way,
state a (wrong) SHA-256, redirect the way Hugging Face does, require a token,
ignore Range, or announce an impossible size. Records every request."""
import hashlib
import http.server
import re
import threading
import time


class Served:
    def __init__(self, data):
        self.data = data
        self.sha = hashlib.sha256(data).hexdigest()  # stated in X-Linked-ETag; set None to state nothing
        self.cut_after = None   # bytes sent before the connection is dropped ...
        self.cuts_left = 0      # ... this many times
        self.redirect = False   # /path -> 302 to http://localhost:PORT/storage/path, size and hash on the redirect (Hugging Face style)
        self.token = None       # required Bearer token
        self.ranges = True      # honour Range
        self.claim_size = None  # Content-Length to announce instead of the real one
        self.chunk_delay = 0    # seconds to wait after each 64 KiB sent (a slow link)


class RangeServer:
    def __init__(self):
        self.files = {}
        self.log = []  # (path, Range header, Authorization header)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.log.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
                path = self.path
                storage = path.startswith("/storage/")
                if storage:
                    path = path[len("/storage"):]
                f = outer.files.get(path)
                if f is None:
                    return self.reply(404, b"no such file\n")
                if f.token and self.headers.get("Authorization") != f"Bearer {f.token}" and not storage:
                    return self.reply(401, b"token needed\n")
                if f.redirect and not storage:
                    self.send_response(302)
                    # Another host name for the same server, as Hugging Face
                    # sends /resolve/ requests on to its storage host.
                    port = outer.httpd.server_address[1]
                    self.send_header("Location", f"http://localhost:{port}/storage{path}")
                    if f.sha:
                        self.send_header("X-Linked-ETag", f'"{f.sha}"')
                    self.send_header("X-Linked-Size", str(len(f.data)))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and f.ranges:
                    start = int(m.group(1))
                    if start >= len(f.data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(f.data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = f.data[start:]
                self.send_response(206 if m and f.ranges else 200)
                if m and f.ranges:
                    self.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
                self.send_header("Content-Length", str(f.claim_size or len(body)))
                if f.sha and not f.redirect:
                    self.send_header("ETag", f'"{f.sha}"')
                self.end_headers()
                if f.cuts_left > 0 and f.cut_after is not None:
                    f.cuts_left -= 1
                    body = body[: max(0, f.cut_after - start)]
                elif f.claim_size:
                    body = body[:16]  # a start, then the connection drops
                step = 65536 if f.chunk_delay else max(1, len(body))
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    if f.chunk_delay:
                        time.sleep(f.chunk_delay)

            def reply(self, code, body):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, path, data):
        self.files[path] = Served(data)
        return self.files[path]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
